"""UPGrad: average of the task gradients projected onto the dual cone."""

from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting import solvers
from keras_mtl.weighting.weighting import GradientWeighting


@keras_serializable
class UPGrad(GradientWeighting):
    """Unconflicting projection of gradients (Quinton and Rey, "Jacobian
    Descent for Multi-Objective Optimization", 2024).

    Each task gradient, weighted by the preference `1/T`, is projected onto
    the dual cone of the task gradients `{x : g_t . x >= 0 for all t}` (the
    directions that conflict with no task), and the projections are summed.
    The direction therefore never conflicts with a task (`g_t . d >= 0`),
    equals the mean gradient when no pair of tasks conflicts, and scales
    linearly with the gradients. By the paper's Proposition 1 the projection
    of `J^T u` is `J^T v` with `v = argmin_{v >= u} v^T G v`, a QP on the
    `T x T` Gram matrix solved exactly in-graph
    (`solvers.dual_cone_weights`) instead of quadprog.

    As in TorchJD, the Gram matrix is first divided by its trace (set to 0
    below `norm_eps`) and `reg_eps * I` is added (positive definiteness).
    Absent tasks are left out of the cone and of the mean.

    Logged weights: `w = sum_i v_i`, with `d = sum_t w_t g_t`. Defined on the
    parameters' Jacobian: `rep_grad=True` raises (as in LibMTL).

    Args:
        norm_eps: trace below which the Gram matrix is taken as zero.
        reg_eps: regularisation added to the normalised Gram matrix.
        rep_grad: must be `False`.

    Example:

    >>> weighting = UPGrad()  # ~(0.25, 0.75)
    >>> np.round(weighting.aggregate(np.array([[1.0, 0.0], [-1.0, 1.0]], "float32")), 4)
    array([0.2499, 0.75  ], dtype=float32)
    """

    supports_rep_grad = False
    gramian_weights = True

    def __init__(self, norm_eps=1e-4, reg_eps=1e-4, rep_grad=False, **kwargs):
        super().__init__(rep_grad=rep_grad, **kwargs)
        self.norm_eps = float(norm_eps)
        self.reg_eps = float(reg_eps)

    def compute_gramian_weights(self, gram, losses, present):
        num_tasks = gram.shape[0]
        gram = solvers.normalized_gram(gram, present, self.norm_eps, self.reg_eps)  # (T, T)
        preferences = ops.eye(num_tasks) * (present / ops.maximum(ops.sum(present), 1.0))[None]
        projected = solvers.dual_cone_weights(gram, preferences, present)  # (T, T): row i is v_i
        weights = ops.sum(projected, axis=0) * present  # (T,)
        return weights, weights

    def get_config(self):
        return {**super().get_config(), "norm_eps": self.norm_eps, "reg_eps": self.reg_eps}
