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


class PreviousBatchGram:
    """Mixin of a `GradientWeighting` that pairs the last batch's task gradients with this one's.

    MoDo and SDMGrad estimate `G = J J^T` from two independent batches; a
    Keras step has one, so the previous step's gradients stand in for the
    second (`cross_batch_gram`). The mixin holds the `(T,)` stored task
    weights (`task_weights_state`, starting at `1/T`), which tasks were seen,
    and the `(T, D)` buffer of the previous gradients. Put it before
    `GradientWeighting` in the bases.
    """

    weights_state_name = "task_weights"

    def build_state(self, num_tasks):
        self.task_weights_state = self.add_weight(
            shape=(num_tasks,), trainable=False, name=self.weights_state_name,
            initializer=lambda shape, dtype: ops.full(shape, 1.0 / num_tasks, dtype))
        self.seen = self.add_weight(shape=(num_tasks,), initializer="zeros", trainable=False,
                                    name="seen")

    def build_gradient_state(self, gradient_dim):
        """Creates the `(T, D)` buffer of the previous batch's task gradients."""
        build_buffer(self, "previous_gradients", gradient_dim, "previous_gradients")

    def previous_batch_products(self, grads, present):
        """`J_prev J^T` `(T, T)`, then this batch's gradients become the stored ones."""
        previous = ensure_buffer(self, "previous_gradients", grads.shape[1], "previous_gradients")
        products = cross_batch_gram(previous, self.seen, grads, present)  # (T, T)
        remember_batch(previous, self.seen, grads, present)
        return products
