"""DB-MTL: log losses for the loss scales, EMA gradients rescaled to the largest norm."""

import tensorflow as tf
from keras import ops

from keras_mtl import compat
from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting.weighting import GradientWeighting


@keras_serializable
class DualBalancing(GradientWeighting):
    """Dual-Balancing Multi-Task Learning (Lin et al., "Dual-Balancing for
    Multi-Task Learning", arXiv:2308.12029, 2023).

    Both halves of the paper:

    1. Loss-scale balancing: task t's objective is `log(L_t + epsilon)`, so
       its gradient `g_t = grad L_t / (L_t + epsilon)` is scale-free
       (`objective_scales` returns `1 / (L_t + epsilon)`; the heads get
       these gradients too, as in the reference code).
    2. Gradient-magnitude balancing: an exponential moving average of each
       task's gradient of the shared parameters,

           g_hat_t <- beta_k g_hat_t + (1 - beta_k) g_t,  beta_k = beta / k^beta_sigma

       (k = the step, from 1; `g_hat` starts at 0), then every average is
       scaled up to the largest norm and the results are summed:

           alpha_t = max_s ||g_hat_s|| / ||g_hat_t||,  direction = sum_t alpha_t g_hat_t.

    The logged weight of task t is `alpha_t`. The moving average keeps a
    `(T, D)` float32 buffer, D = the number of shared trainable parameters
    (3 tasks on ResNet-50: about 280 MB); the model creates it at build
    (`build_gradient_state`). Like the reference code it is defined on
    parameter gradients here (`rep_grad=True` raises): feature gradients of
    different batches are not comparable vectors. An absent task's average
    is left untouched and it is left out of the max and the sum. For the
    log-loss half alone (no per-task gradients, no buffer) use
    `"log_losses"`.

    Args:
        beta: moving-average factor (the reference code's default 0.9).
        beta_sigma: decay exponent of `beta` over steps (default 0: constant).
        epsilon: added to each loss inside the log (1e-8 as in the paper).
        rep_grad: must be `False`.

    Example:

    >>> weighting = DualBalancing(beta=0.5)
    >>> weighting.set_tasks([Classification("a", 2), Classification("b", 2)])
    >>> weighting.aggregate(np.array([[1.0, 0.0], [0.0, 2.0]], "float32"))
    <tf.Tensor: shape=(2,), dtype=float32, numpy=array([1., 1.], dtype=float32)>
    """

    supports_rep_grad = False

    def __init__(self, beta=0.9, beta_sigma=0.0, epsilon=1e-8, rep_grad=False, **kwargs):
        super().__init__(rep_grad=rep_grad, **kwargs)
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"DualBalancing beta must be in [0, 1), got {beta}.")
        self.beta = float(beta)
        self.beta_sigma = float(beta_sigma)
        self.epsilon = float(epsilon)
        self.gradient_buffer = None

    def build_state(self, num_tasks):
        self.step_count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="step")

    def build_gradient_state(self, gradient_dim):
        """Creates the `(T, D)` moving average of the task gradients."""
        if self.gradient_buffer is not None:
            if self.gradient_buffer.shape[1] != gradient_dim:
                raise ValueError(
                    f"DualBalancing's gradient average was built for {self.gradient_buffer.shape[1]} "
                    f"shared parameters, the gradients have {gradient_dim}: build a new model "
                    "(and weighting) after changing which trunk layers are trainable.")
            return
        with compat.adding_state_after_build(self):
            self.gradient_buffer = self.add_weight(
                shape=(self.num_tasks, gradient_dim), initializer="zeros", trainable=False,
                name="gradient_average")

    def objective_scales(self, losses):
        losses = ops.cast(losses, "float32")  # (T,)
        return 1.0 / (ops.maximum(losses, 0.0) + self.epsilon)  # d log(L + eps) / d L

    def compute_direction(self, grads, losses, present):
        if self.gradient_buffer is None:
            if not tf.executing_eagerly():
                raise ValueError(
                    "DualBalancing needs its gradient average before the train step is traced: "
                    "use it through MultiTaskModel, or call build_gradient_state(D) first.")
            self.build_gradient_state(grads.shape[1])
        self.step_count.assign_add(1.0)
        beta = self.beta / ops.power(self.step_count, self.beta_sigma)  # () beta_k
        labelled = ops.expand_dims(present, 1) > 0.0  # (T, 1)
        average = ops.where(labelled, beta * self.gradient_buffer + (1.0 - beta) * grads,
                            self.gradient_buffer)  # (T, D)
        self.gradient_buffer.assign(average)
        norms = ops.sqrt(ops.sum(ops.square(average), axis=1))  # (T,)
        largest = ops.max(norms * present)  # () over present tasks
        alphas = present * largest / (norms + self.epsilon)  # (T,)
        direction = ops.sum(ops.expand_dims(alphas, 1) * average, axis=0)  # (D,)
        return direction, alphas

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "beta_sigma": self.beta_sigma,
                "epsilon": self.epsilon}
