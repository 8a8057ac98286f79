"""`(T, D)` per-task gradient buffers, created once the shared parameters are known."""

import tensorflow as tf
from keras import ops

from keras_mtl import compat


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
    with compat.adding_state_after_build(weighting):
        buffer = weighting.add_weight(shape=(weighting.num_tasks, gradient_dim),
                                      initializer="zeros", trainable=False, name=name)
    setattr(weighting, attribute, buffer)
    return buffer


def ensure_buffer(weighting, attribute, gradient_dim, name):
    """The buffer, created now when running eagerly; inside a traced step it must exist."""
    if getattr(weighting, attribute, None) is None and not tf.executing_eagerly():
        raise ValueError(
            f"{type(weighting).__name__} needs its {name} before the train step is traced: use it "
            "through MultiTaskModel, or call build_gradient_state(D) first.")
    return build_buffer(weighting, attribute, gradient_dim, name)


def cross_batch_gram(previous, seen, grads, present):
    """`A = J_prev J^T` `(T, T)`: inner products of the last labelled batch's task
    gradients (`previous` `(T, D)`) with this batch's (`grads` `(T, D)`).

    Two independent mini-batches give an unbiased estimate of `G = J J^T`,
    which MoDo and SDMGrad need. A task never seen before (`seen` `(T,)`
    0) uses this batch's gradient for both. Rows and columns of absent
    tasks are 0. Not symmetric in general.
    """
    earlier = ops.where(seen[:, None] > 0.0, previous, grads)  # (T, D)
    products = ops.matmul(earlier, ops.transpose(grads))  # (T, T)
    return products * present[:, None] * present[None, :]


def remember_batch(previous, seen, grads, present):
    """Stores this batch's gradients of the present tasks as the next step's `previous`."""
    previous.assign(ops.where(present[:, None] > 0.0, grads, previous))
    seen.assign(ops.maximum(seen, present))
