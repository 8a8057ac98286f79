"""MGDA: the min-norm point of the convex hull of the task gradients."""

from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting import solvers
from keras_mtl.weighting.weighting import GradientWeighting

NORMALIZATIONS = ("none", "l2", "loss", "loss+")


@keras_serializable
class MGDA(GradientWeighting):
    """Multiple-gradient descent (Sener and Koltun, "Multi-Task Learning as
    Multi-Objective Optimization", NeurIPS 2018).

    Finds the convex weights `w` (on the simplex) of the min-norm point of
    the convex hull of the task gradients,

        w = argmin_{w >= 0, sum w = 1} || sum_t w_t g_t ||^2,

    a direction that decreases every task's loss to first order (or 0 at a
    Pareto-stationary point), and returns `sum_t w_t g_t`. The paper's
    Frank-Wolfe solver is replaced by an exact active-set solve on the
    `T x T` Gram matrix (`solvers.min_norm_weights`).

    MGDA-UB, the paper's efficient upper bound, is this method on the
    gradients of the shared features: `rep_grad=True`. The reference code's
    gradient normalisations are applied to the rows before the solve:
    `"l2"` (divide `g_t` by its norm), `"loss"` (by `L_t`), `"loss+"` (by
    `L_t ||g_t||`) or `"none"`. As in the reference code, the weights found
    on the normalised gradients then combine the raw gradients. Logged
    weights: `w`.

    Args:
        normalization: one of `"none"`, `"l2"`, `"loss"`, `"loss+"`.
        rep_grad: see `GradientWeighting`.

    Example:

    >>> weighting = MGDA()  # (0.8, 0.4)
    >>> np.round(weighting.aggregate(np.array([[1.0, 0.0], [0.0, 2.0]], "float32")), 4)
    array([0.8, 0.4], dtype=float32)
    """

    def __init__(self, normalization="none", rep_grad=False, **kwargs):
        super().__init__(rep_grad=rep_grad, **kwargs)
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"MGDA normalization must be one of {NORMALIZATIONS}, got {normalization!r}.")
        self.normalization = normalization

    gramian_weights = True

    def compute_gramian_weights(self, gram, losses, present):
        if self.normalization != "none":
            norms = ops.sqrt(ops.maximum(ops.diagonal(gram), 0.0))  # (T,)
            if self.normalization == "l2":
                divisor = norms
            else:
                if losses is None:
                    raise ValueError(f"MGDA(normalization={self.normalization!r}) needs the losses.")
                divisor = losses if self.normalization == "loss" else losses * norms
            divisor = ops.where(divisor > 0, divisor, 1.0)
            gram = gram / ops.expand_dims(divisor, 0) / ops.expand_dims(divisor, 1)
        weights = solvers.min_norm_weights(gram, present)  # (T,)
        return weights, weights

    def get_config(self):
        return {**super().get_config(), "normalization": self.normalization}
