"""CR-MOGM: MGDA's weights smoothed by an exponential moving average over steps."""

from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting import solvers
from keras_mtl.weighting.weighting import GradientWeighting


@keras_serializable
class CRMOGM(GradientWeighting):
    """Conflict-reduction multi-objective gradient manipulation, CR-MOGM
    (Zhou, Zhang, Jiang, Zhong, Gu and Zhu, "On the Convergence of
    Stochastic Multi-Objective Gradient Manipulation and Beyond", NeurIPS
    2022; reference behaviour: TorchJD's `CRMOGMWeighting` wrapped around
    MGDA's weights).

    Stochastic MGDA's weights jump from batch to batch, and the paper shows
    that this is what breaks its convergence. CR-MOGM smooths them:

        lambda_hat_k = MGDA's min-norm weights of this step's gradients
        lambda_k = alpha lambda_{k-1} + (1 - alpha) lambda_hat_k
        d = sum_t lambda_k[t] g_t

    with `lambda_0` uniform. The min-norm weights are solved exactly
    in-graph (`solvers.min_norm_weights`, as `"mgda"`). `alpha = 0` is MGDA;
    `alpha = 1` freezes the uniform weights (the mean gradient). The paper's
    Corollary 1 lets `alpha_k` grow towards 1 as the learning rate decays;
    here `alpha` is a constant, as in TorchJD.

    Missing labels: an absent task's `lambda_t` is untouched; the present
    tasks' weights are renormalised to sum 1, smoothed with the MGDA
    weights of the present tasks, and stored back with the mass they had.
    Logged weights: the renormalised `lambda_k` of the step. MGDA is
    defined on any shared gradient (MGDA-UB), so `rep_grad=True` is
    supported.

    Args:
        alpha: moving-average factor on the previous weights, in [0, 1].
        rep_grad: see `GradientWeighting`.

    Example:

    >>> weighting = CRMOGM(alpha=0.5)  # lambda = (0.5, 0.5) / 2 + MGDA's (0.8, 0.2) / 2
    >>> np.round(weighting.aggregate(np.array([[1.0, 0.0], [0.0, 2.0]], "float32")), 4)
    array([0.65, 0.7 ], dtype=float32)
    """

    def __init__(self, alpha=0.9, rep_grad=False, **kwargs):
        super().__init__(rep_grad=rep_grad, **kwargs)
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"CRMOGM alpha must be in [0, 1], got {alpha}.")
        self.alpha = float(alpha)

    def build_state(self, num_tasks):
        self.smoothed_weights = self.add_weight(
            shape=(num_tasks,), trainable=False, name="smoothed_weights",
            initializer=lambda shape, dtype: ops.full(shape, 1.0 / num_tasks, dtype))

    gramian_weights = True  # the coefficients depend on the gradients through G alone

    def compute_gramian_weights(self, gram, losses, present):
        previous = ops.convert_to_tensor(self.smoothed_weights)  # (T,)
        mass = ops.sum(previous * present)  # () held by the present tasks
        shares = previous * present / ops.maximum(mass, 1e-30)  # (T,) sum 1 over present
        min_norm = solvers.min_norm_weights(gram, present)  # (T,)
        weights = (self.alpha * shares + (1.0 - self.alpha) * min_norm) * present  # (T,)
        self.smoothed_weights.assign(ops.where(present > 0.0, mass * weights, previous))
        return weights, weights

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}
