"""GradNorm: learned loss weights that balance the tasks' gradient norms."""

from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting import solvers
from keras_mtl.weighting.weighting import GradientWeighting


@keras_serializable
class GradNorm(GradientWeighting):
    """Gradient normalisation (Chen et al., "GradNorm: Gradient Normalization
    for Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018).

    The network is trained on `sum_t w_t L_t` with learned weights `w_t`
    (starting at 1): `loss_scales()` returns `w`, so row t of `grads` is the
    gradient of `w_t L_t`, the heads get the gradients of their weighted
    losses, and the direction is the sum of the rows. After each step the
    weights move so that the tasks' gradient norms train at similar rates:

    - `G_t = ||grad w_t L_t||`, here the norm of row t (the shared
      parameters' gradient as in LibMTL, or, with `rep_grad=True`, the
      shared features' gradient, close to the paper's last shared layer and
      much cheaper); `G_bar` their mean over the present tasks.
    - `r_t = L~_t / mean(L~)`, the relative inverse training rate, with
      `L~_t = L_t / L_t(0)` and `L_t(0)` the task's loss at its first step
      with labels.
    - the GradNorm loss `L_grad = sum_t |G_t - G_bar r_t^alpha|`, with the
      target `G_bar r_t^alpha` held constant, is differentiated with
      respect to `w`: `dL_grad/dw_t = sign(G_t - target_t) ||g_t||`, with
      `||g_t|| = G_t / w_t` the norm of the unweighted gradient.
    - `w` takes an Adam step on that gradient (`learning_rate`; the paper
      uses the network's optimizer), is floored at `min_weight`, and is
      renormalised so that the present tasks' weights keep their sum
      (`sum_t w_t = T` over all tasks, as in the paper).

    A task without labels in the batch is left out of `G_bar`, `r` and the
    update; its weight is kept. `alpha` sets the strength of the restoring
    force (the paper uses 0.12 to 1.5; larger for tasks of different
    difficulty). Logged weights: the `w` used in the step.

    Args:
        alpha: asymmetry hyperparameter (LibMTL's default 1.5).
        learning_rate: Adam learning rate of the weights (0.025 as in the
            paper's synthetic experiment).
        min_weight: floor of each weight (keeps them positive).
        rep_grad: use the shared features' gradients for the norms.

    Example:

    >>> weighting = GradNorm(alpha=1.5)
    >>> weighting.set_tasks([Classification("a", 2), Classification("b", 2)])
    >>> # direction (3, 1); then w_a decreases, w_b increases (a's gradient is larger)
    >>> grads = np.array([[3.0, 0.0], [0.0, 1.0]], "float32")
    >>> np.round(weighting.aggregate(grads, np.array([1.0, 1.0])), 4)
    array([3., 1.], dtype=float32)
    """

    def __init__(self, alpha=1.5, learning_rate=0.025, min_weight=1e-3, rep_grad=False, **kwargs):
        super().__init__(rep_grad=rep_grad, **kwargs)
        if not alpha >= 0.0:
            raise ValueError(f"GradNorm alpha must be >= 0, got {alpha}.")
        self.alpha = float(alpha)
        self.learning_rate = float(learning_rate)
        self.min_weight = float(min_weight)

    def build_state(self, num_tasks):
        def state(name, initializer="zeros"):
            return self.add_weight(shape=(num_tasks,), initializer=initializer, trainable=False, name=name)

        self.loss_weights = state("loss_weights", "ones")
        self.initial_losses = state("initial_losses")
        self.has_initial_loss = state("has_initial_loss")
        self.adam_m = state("loss_weights_m")
        self.adam_v = state("loss_weights_v")
        self.adam_count = state("loss_weights_count")

    def loss_scales(self):
        return ops.convert_to_tensor(self.loss_weights)

    gramian_weights = True

    def compute_gramian_weights(self, gram, losses, present):
        if losses is None:
            raise ValueError("GradNorm needs the task losses: aggregate(grads, losses, present).")
        weights = ops.convert_to_tensor(self.loss_weights)  # (T,) the w of this step

        count = ops.maximum(ops.sum(present), 1.0)
        first = present * (1.0 - self.has_initial_loss)
        initial = ops.where(first > 0, losses, self.initial_losses)
        self.initial_losses.assign(initial)
        self.has_initial_loss.assign(ops.maximum(self.has_initial_loss, present))

        norms = ops.sqrt(ops.maximum(ops.diagonal(gram), 0.0))  # (T,) G_t
        mean_norm = ops.sum(norms * present) / count
        ratio = ops.where(present > 0, losses / ops.where(initial > 0, initial, 1.0), 0.0)  # L~_t
        mean_ratio = ops.sum(ratio) / count
        rate = ops.where(mean_ratio > 0, ratio / ops.where(mean_ratio > 0, mean_ratio, 1.0), 1.0)
        target = mean_norm * ops.power(ops.maximum(rate, 0.0), self.alpha)  # held constant
        raw_norms = norms / ops.maximum(weights, 1e-12)  # ||grad L_t||
        gradient = ops.sign(norms - target) * raw_norms * present  # dL_grad / dw

        new_weights, m, v, steps = solvers.adam_update(
            weights, gradient, self.adam_m, self.adam_v, self.adam_count, self.learning_rate, present,
        )
        new_weights = ops.maximum(new_weights, self.min_weight)
        old_sum = ops.sum(weights * present)
        new_sum = ops.sum(new_weights * present)
        renormalised = new_weights * old_sum / ops.maximum(new_sum, 1e-12)
        new_weights = ops.where(present > 0, renormalised, weights)
        for variable, value in zip(
            (self.loss_weights, self.adam_m, self.adam_v, self.adam_count), (new_weights, m, v, steps)
        ):
            variable.assign(value)
        return present, weights  # direction: the sum of the rows (gradients of w_t L_t)

    def get_config(self):
        return {
            **super().get_config(), "alpha": self.alpha, "learning_rate": self.learning_rate,
            "min_weight": self.min_weight,
        }
