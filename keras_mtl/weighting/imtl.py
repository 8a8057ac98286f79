"""IMTL: impartial multi-task learning (IMTL-G, and the hybrid with IMTL-L)."""

from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting import solvers
from keras_mtl.weighting.weighting import GradientWeighting

MODES = ("hybrid", "gradient")


def imtl_g_weights(gram, present):
    """IMTL-G's weights `(T,)`: `sum a = 1` and equal projections of
    `d = sum_t a_t g_t` on every present unit gradient `u_t = g_t / ||g_t||`.

    The paper's closed form `a_{2:} = g_1 U^T (D U^T)^-1` (differences with
    task 1) is the bordered linear system `N G a = mu 1`, `1^T a = 1` with
    `N = diag(1 / ||g_t||)`, solved here without a reference task so that
    any task may be absent. A singular system (parallel gradients, where
    every combination has equal projections) falls back to the mean.
    """
    num_tasks = gram.shape[-1]
    gram = solvers.masked_gram(gram, present)
    norms = ops.sqrt(ops.maximum(ops.diagonal(gram), 0.0))  # (T,)
    usable = present * ops.cast(norms > 0, "float32")  # a zero gradient has no direction
    scale = ops.maximum(ops.max(norms), 1e-30)
    projections = gram / ops.expand_dims(ops.where(norms > 0, norms, 1.0), 1) / scale  # (T, T) u_t . g_s
    eye = ops.eye(num_tasks)
    top_left = projections * usable[:, None] * usable[None, :] + eye * (1.0 - usable)[None]
    top = ops.concatenate([top_left, -usable[:, None]], axis=1)  # (T, T+1)
    bottom = ops.concatenate([usable, ops.zeros((1,))], axis=0)[None]  # (1, T+1)
    rhs = ops.concatenate([ops.zeros((num_tasks,)), ops.ones((1,))], axis=0)[:, None]
    solution = solvers.solve_small(ops.concatenate([top, bottom], axis=0), rhs)[:num_tasks, 0]
    count = ops.maximum(ops.sum(usable), 1.0)
    ok = ops.all(ops.isfinite(solution)) & (ops.max(ops.abs(solution)) < 1e6)
    return ops.where(ok, solution, usable / count) * usable


@keras_serializable
class IMTL(GradientWeighting):
    """Impartial multi-task learning (Liu et al., "Towards Impartial
    Multi-task Learning", ICLR 2021).

    IMTL-G (gradient balance) finds the combination `d = sum_t a_t g_t` with
    `sum_t a_t = 1` whose projections onto every unit task gradient are
    equal, `d . g_t / ||g_t||` the same for all t, so no task dominates the
    shared update.

    IMTL-L (loss balance) learns a log-scale `s_t` per task and trains on
    `exp(s_t) L_t - s_t`, whose minimum over `s_t` makes every scaled loss
    equal to 1. In the hybrid (`mode="hybrid"`, the paper's full IMTL and
    LibMTL's implementation), IMTL-G combines the gradients of the scaled
    losses `exp(s_t) L_t` (`loss_scales()`), and the heads get their scaled
    losses' gradients too. The paper trains `s` with the network's
    optimizer; here each step takes an Adam step on `s` with the gradient
    `exp(s_t) L_t - 1` (its own state, `learning_rate`), for present tasks
    only. `mode="gradient"` is IMTL-G alone.

    Logged weights: the coefficients of `d` on the raw task gradients,
    `a_t exp(s_t)`.

    Args:
        mode: `"hybrid"` (IMTL) or `"gradient"` (IMTL-G).
        learning_rate: Adam learning rate of the log-scales `s`.
        rep_grad: `True` computes IMTL-G on the shared features' gradients
            (the paper's choice: gradients of the shared representation).

    Example:

    >>> weighting = IMTL(mode="gradient")  # (2/3, 2/3)
    >>> np.round(weighting.aggregate(np.array([[1.0, 0.0], [0.0, 2.0]], "float32")), 4)
    array([0.6667, 0.6667], dtype=float32)
    """

    def __init__(self, mode="hybrid", learning_rate=1e-3, rep_grad=False, **kwargs):
        super().__init__(rep_grad=rep_grad, **kwargs)
        if mode not in MODES:
            raise ValueError(f"IMTL mode must be one of {MODES}, got {mode!r}.")
        self.mode = mode
        self.learning_rate = float(learning_rate)

    def build_state(self, num_tasks):
        def state(name):
            return self.add_weight(shape=(num_tasks,), initializer="zeros", trainable=False, name=name)

        self.log_scales = state("log_scales")
        self.adam_m = state("log_scales_m")
        self.adam_v = state("log_scales_v")
        self.adam_count = state("log_scales_count")

    def loss_scales(self):
        if self.mode == "gradient":
            return super().loss_scales()
        return ops.exp(ops.convert_to_tensor(self.log_scales))

    gramian_weights = True

    def compute_gramian_weights(self, gram, losses, present):
        scales = self.loss_scales()  # (T,) the rows are gradients of scales * L
        alpha = imtl_g_weights(gram, present)  # (T,)
        if self.mode == "hybrid" and losses is not None:
            gradient = (scales * losses - 1.0) * present  # d/ds (exp(s) L - s)
            new = solvers.adam_update(
                ops.convert_to_tensor(self.log_scales), gradient, self.adam_m, self.adam_v,
                self.adam_count, self.learning_rate, present,
            )
            for variable, value in zip((self.log_scales, self.adam_m, self.adam_v, self.adam_count), new):
                variable.assign(value)
        return alpha, alpha * scales

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "learning_rate": self.learning_rate}
