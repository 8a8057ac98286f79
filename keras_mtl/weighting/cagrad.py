"""CAGrad: the best worst-task improvement in a ball around the mean gradient."""

from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting import solvers
from keras_mtl.weighting.weighting import GradientWeighting

RESCALES = (0, 1, 2)


@keras_serializable
class CAGrad(GradientWeighting):
    """Conflict-averse gradient descent (Liu et al., "Conflict-Averse
    Gradient Descent for Multi-task Learning", NeurIPS 2021).

    Looks for the direction `d` that maximises the worst task's first-order
    improvement `min_t g_t . d` within the ball `||d - g_0|| <= c ||g_0||`
    around the mean gradient `g_0`. Its dual is a problem on the simplex,

        w = argmin_w  g_w . g_0 + c ||g_0|| ||g_w||,   g_w = sum_t w_t g_t,

    and then `d = g_0 + c ||g_0|| g_w / ||g_w||`. The reference solves the
    dual with scipy's SLSQP; here it is solved in-graph on the Gram matrix
    (`solvers.cagrad_weights`: a golden-section search over a scalar, each
    step an exact simplex QP). `c = 0` gives the mean gradient. As in the
    reference, `d` is then divided by `1 + c^2` (`rescale=1`), `1 + c`
    (`rescale=2`) or left (`rescale=0`). Absent tasks are left out of the
    mean and of the problem.

    Logged weights: the coefficients `w'_t` of `d = sum_t w'_t g_t`
    (`(1/T + lambda w_t) / rescale`, not the dual `w` that LibMTL returns).
    Defined on parameter gradients: `rep_grad=True` raises (as in LibMTL).

    Args:
        c: radius of the ball relative to `||g_0||` (the reference's
            `alpha`/`calpha`, 0.5).
        rescale: 0, 1 or 2 (see above).
        iterations: golden-section steps of the solver.
        rep_grad: must be `False`.

    Example:

    >>> weighting = CAGrad(c=0.0)  # the mean, (0, 0.5)
    >>> np.round(weighting.aggregate(np.array([[1.0, 0.0], [-1.0, 1.0]], "float32")), 4)
    array([0. , 0.5], dtype=float32)
    """

    supports_rep_grad = False
    gramian_weights = True

    def __init__(self, c=0.5, rescale=1, iterations=40, rep_grad=False, **kwargs):
        super().__init__(rep_grad=rep_grad, **kwargs)
        if not c >= 0.0:
            raise ValueError(f"CAGrad c must be >= 0, got {c}.")
        if rescale not in RESCALES:
            raise ValueError(f"CAGrad rescale must be one of {RESCALES}, got {rescale!r}.")
        self.c = float(c)
        self.rescale = int(rescale)
        self.iterations = int(iterations)

    def compute_gramian_weights(self, gram, losses, present):
        gram = solvers.masked_gram(gram, present)  # (T, T)
        mean_weights = present / ops.maximum(ops.sum(present), 1.0)  # (T,): g_0 = J^T b
        weights = mean_weights
        if self.c > 0:
            w = solvers.cagrad_weights(gram, self.c, present, self.iterations)  # (T,)
            g0_norm = ops.sqrt(ops.maximum(ops.sum(mean_weights * ops.matmul(gram, mean_weights)), 0.0))
            gw_norm = ops.sqrt(ops.maximum(ops.sum(w * ops.matmul(gram, w)), 0.0))
            lam = self.c * g0_norm / ops.maximum(gw_norm, 1e-12)
            lam = ops.where(gw_norm > 0, lam, 0.0)
            weights = mean_weights + lam * w
        divisor = {0: 1.0, 1: 1.0 + self.c**2, 2: 1.0 + self.c}[self.rescale]
        weights = weights / divisor
        return weights, weights

    def get_config(self):
        return {
            **super().get_config(), "c": self.c, "rescale": self.rescale,
            "iterations": self.iterations,
        }
