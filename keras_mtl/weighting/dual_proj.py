"""DualProj: the mean gradient projected onto the dual cone of the task gradients."""

from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting import solvers
from keras_mtl.weighting.weighting import GradientWeighting


@keras_serializable
class DualProj(GradientWeighting):
    """Projection of the mean gradient onto the dual cone (the projection of
    Lopez-Paz and Ranzato, "Gradient Episodic Memory for Continual
    Learning", NeurIPS 2017, eq. 11; as an aggregator in Quinton and Rey,
    "Jacobian Descent for Multi-Objective Optimization", 2024; reference
    behaviour: TorchJD's `torchjd.aggregation.DualProj`).

    The mean of the present task gradients `g_0` is replaced by the closest
    vector of the dual cone `{x : g_t . x >= 0 for all t}`, the directions
    that conflict with no task:

        d = argmin_{x : J x >= 0} ||x - g_0||^2.

    `d = g_0` when the mean conflicts with no task. By Proposition 1 of
    Quinton and Rey, `d = J^T v` with `v = argmin_{v >= 1/n} v^T G v`, a QP
    on the `T x T` Gram matrix solved exactly in-graph by the same solver
    as UPGrad (`solvers.dual_cone_weights`); UPGrad projects each task's
    gradient and averages the projections, DualProj averages first and
    projects once.

    As in TorchJD, the Gram matrix is divided by its trace (set to 0 below
    `norm_eps`) and `reg_eps * I` is added (positive definiteness), which
    allows `g_t . d` down to about `-reg_eps trace(G) v_t`; `reg_eps=0`
    makes the cone constraint exact. Absent tasks are left out of the cone
    and of the mean. Logged weights: `v`. Defined on any set of task
    gradients, so `rep_grad=True` is supported.

    Args:
        norm_eps: trace below which the Gram matrix is taken as zero.
        reg_eps: regularisation added to the normalised Gram matrix.
        rep_grad: see `GradientWeighting`.

    Example:

    >>> weighting = DualProj(reg_eps=0.0)  # the mean (-0.5, 0.25) conflicts with (1, 0)
    >>> np.round(weighting.aggregate(np.array([[1.0, 0.0], [-2.0, 0.5]], "float32")), 4)
    array([0.  , 0.25], dtype=float32)
    """

    def __init__(self, norm_eps=1e-4, reg_eps=1e-4, rep_grad=False, **kwargs):
        super().__init__(rep_grad=rep_grad, **kwargs)
        self.norm_eps = float(norm_eps)
        self.reg_eps = float(reg_eps)

    gramian_weights = True  # the coefficients depend on the gradients through G alone

    def compute_gramian_weights(self, gram, losses, present):
        gram = solvers.normalized_gram(gram, present, self.norm_eps, self.reg_eps)  # (T, T)
        mean = present / ops.maximum(ops.sum(present), 1.0)  # (T,) the mean's weights
        weights = solvers.dual_cone_weights(gram, mean, present) * present  # (T,) v >= mean
        return weights, weights

    def get_config(self):
        return {**super().get_config(), "norm_eps": self.norm_eps, "reg_eps": self.reg_eps}
