"""Nash-MTL: the Nash bargaining solution between the tasks."""

from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting import solvers
from keras_mtl.weighting.weighting import GradientWeighting


@keras_serializable
class NashMTL(GradientWeighting):
    """Multi-task learning as a bargaining game (Navon et al., "Multi-Task
    Learning as a Bargaining Game", ICML 2022).

    The direction `d = sum_t a_t g_t` is the Nash bargaining solution: it
    maximises `sum_t log(g_t . d)` in the unit ball, which holds when

        G a = 1 / a,   a > 0    (so `g_t . d = 1 / a_t` for every task),

    with `G` the Gram matrix. The reference code approaches it with a
    sequence of convex problems in cvxpy; here it is solved in-graph by
    damped Newton steps on the equivalent strictly convex problem
    `min_a 1/2 a^T G a - sum_t log a_t` (`solvers.nash_weights`). As in the
    reference, the weights may be recomputed only every
    `update_weights_every` steps (kept in between), and the norm of the
    shared direction is clipped to `max_norm` (0 disables). A single task
    gets `d = g / ||g||`.

    Logged weights: `a` (times the clipping factor). Defined on parameter
    gradients: `rep_grad=True` raises (as in LibMTL).

    Args:
        update_weights_every: recompute `a` every this many steps.
        iterations: Newton steps (the reference's `optim_niter`, 20).
        max_norm: clip the direction's norm to this (the reference's 1.0).
        ridge: relative regularisation of `G` (see `solvers.nash_weights`).
        rep_grad: must be `False`.

    Example:

    >>> weighting = NashMTL(max_norm=0.0)  # a = (1, 1/2): (1, 1)
    >>> np.round(weighting.aggregate(np.array([[1.0, 0.0], [0.0, 2.0]], "float32")), 4)
    array([1., 1.], dtype=float32)
    """

    supports_rep_grad = False
    gramian_weights = True

    def __init__(self, update_weights_every=1, iterations=20, max_norm=1.0, ridge=1e-6,
                 rep_grad=False, **kwargs):
        super().__init__(rep_grad=rep_grad, **kwargs)
        if int(update_weights_every) < 1:
            raise ValueError(f"update_weights_every must be >= 1, got {update_weights_every}.")
        if not max_norm >= 0.0:
            raise ValueError(f"NashMTL max_norm must be >= 0, got {max_norm}.")
        self.update_weights_every = int(update_weights_every)
        self.iterations = int(iterations)
        self.max_norm = float(max_norm)
        self.ridge = float(ridge)

    def build_state(self, num_tasks):
        self.alpha = self.add_weight(shape=(num_tasks,), initializer="ones", trainable=False,
                                     name="alpha")
        self.step = self.add_weight(shape=(), initializer="zeros", trainable=False, name="step")

    def compute_gramian_weights(self, gram, losses, present):
        if self.update_weights_every == 1:
            alpha = solvers.nash_weights(gram, present, self.iterations, self.ridge)
        else:
            recompute = ops.equal(ops.mod(self.step, float(self.update_weights_every)), 0.0)
            alpha = ops.cond(
                recompute,
                lambda: solvers.nash_weights(gram, present, self.iterations, self.ridge),
                lambda: ops.convert_to_tensor(self.alpha) * present,
            )
        self.alpha.assign(ops.where(present > 0, alpha, self.alpha))  # absent tasks: kept
        self.step.assign_add(1.0)
        factor = ops.ones(())
        if self.max_norm > 0:  # ||d||^2 = a^T G a
            norm = ops.sqrt(ops.maximum(ops.sum(alpha * ops.matmul(gram, alpha)), 0.0))
            factor = ops.minimum(1.0, self.max_norm / ops.maximum(norm, 1e-12))
        return alpha * factor, alpha * factor

    def get_config(self):
        return {
            **super().get_config(), "update_weights_every": self.update_weights_every,
            "iterations": self.iterations, "max_norm": self.max_norm, "ridge": self.ridge,
        }
