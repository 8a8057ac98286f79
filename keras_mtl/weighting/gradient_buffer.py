"""A `(T, D)` per-task gradient buffer, created once the shared parameters are known."""

import tensorflow as tf


def build_buffer(weighting, attribute, gradient_dim, name):
    """Creates `weighting.<attribute>`, a `(T, D)` float32 zero variable, once.

    For weightings whose state has one row per task of the size of the
    shared parameters (MoCo's moving gradients, ExcessMTL's sums of
    squares); `MultiTaskModel` calls `build_gradient_state(D)` at build, so
    the variable is saved and restored with the model. Raises when a buffer
    of another size exists (the trainable trunk layers changed).
    """
    existing = getattr(weighting, attribute, None)
    if existing is not None:
        if existing.shape[1] != gradient_dim:
            raise ValueError(
                f"{type(weighting).__name__}'s {name} was built for {existing.shape[1]} shared "
                f"parameters, the gradients have {gradient_dim}: build a new model (and weighting) "
                "after changing which trunk layers are trainable.")
        return existing
    locked = weighting._tracker.locked
    weighting._tracker.unlock()
    buffer = weighting.add_weight(shape=(weighting.num_tasks, gradient_dim), initializer="zeros",
                                  trainable=False, name=name)
    if locked:
        weighting._tracker.lock()
    setattr(weighting, attribute, buffer)
    return buffer


def ensure_buffer(weighting, attribute, gradient_dim, name):
    """The buffer, created now when running eagerly; inside a traced step it must exist."""
    if getattr(weighting, attribute, None) is None and not tf.executing_eagerly():
        raise ValueError(
            f"{type(weighting).__name__} needs its {name} before the train step is traced: use it "
            "through MultiTaskModel, or call build_gradient_state(D) first.")
    return build_buffer(weighting, attribute, gradient_dim, name)
