"""FairGrad: alpha-fair shares of the update, `G w = w^(-1/alpha)`."""

import numpy as np
from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting import solvers
from keras_mtl.weighting.weighting import GradientWeighting


_STEP_SIZES = 0.5 ** np.arange(16, dtype="float32")  # (S,) tried by the line search


def fair_weights(gram, alpha, present=None, iterations=20, ridge=1e-12):
    """The FairGrad weights: `w > 0` with `(G w)_t = w_t^(-1/alpha)` for every present t.

    The equation is the stationarity condition of the strictly convex

        f(w) = 1/2 w^T (G + ridge I) w - sum_t phi(w_t),   phi'(w) = w^(-1/alpha)

    (`phi = log` for `alpha = 1`, the Nash-MTL equation `G w = 1 / w`), so
    `f` is minimised by Newton steps with a backtracking line search: each
    step tries the sizes 1, 1/2, ..., 2^-15 at once and keeps the largest
    that keeps `w > 0` and decreases `f` (Armijo), so the iterations never
    leave the domain and converge quadratically near the solution. They
    start from the solution for orthogonal gradients, `w_t = G_tt^(-alpha /
    (alpha + 1))`. As in `nash_weights`, the Gram matrix is first divided
    by its Frobenius norm `n`, and the solution `w'` of the normalised
    problem is rescaled to `w = w' n^(-alpha / (alpha + 1))`, which solves
    the original equation; `ridge` (relative to that norm) keeps `f`
    bounded when the gradients are linearly dependent and conflicting,
    where no exact solution exists (the line search then bounds how far
    `w` grows). It is far below `nash_weights`' 1e-6, which moved the
    solution by up to 100% on Gram matrices of condition number 1e5 to 1e6;
    with 1e-12 the residual of the equation is at float32 precision (below
    1e-5 on well-conditioned matrices, 0.5% at a condition number of 1e6).

    Args:
        gram: `(T, T)` Gram matrix.
        alpha: fairness parameter `alpha > 0`.
        present: optional `(T,)` mask; absent tasks, and tasks whose
            gradient is zero (no decrease can be allocated to them), get
            weight 0.
        iterations: Newton steps.
        ridge: relative Tikhonov term.

    Returns:
        `w` `(T,)`, positive on the present tasks with a non-zero gradient.
    """
    gram = ops.cast(gram, "float32")
    num_tasks = gram.shape[-1]
    present = solvers.present_mask(present, num_tasks)
    present = present * ops.cast(ops.diagonal(gram) > 0.0, "float32")  # a zero gradient: weight 0
    gram = solvers.masked_gram(gram, present)
    norm = ops.maximum(ops.sqrt(ops.sum(gram * gram)), 1e-30)
    eye = ops.eye(num_tasks)
    quad = gram / norm + ridge * eye * present[None]  # (T, T)
    exponent = -1.0 / alpha
    sizes = ops.convert_to_tensor(_STEP_SIZES)[:, None]  # (S, 1)

    def objective(weights):  # (..., T) -> (...,) f, absent entries held at 1
        quadratic = 0.5 * ops.sum(ops.matmul(weights, quad) * weights, axis=-1)
        if alpha == 1.0:
            concave = ops.log(weights)
        else:
            concave = ops.power(weights, 1.0 + exponent) / (1.0 + exponent)
        return quadratic - ops.sum(concave * present, axis=-1)

    def newton_step(i, weights):
        gradient = (ops.matmul(quad, weights) - ops.power(weights, exponent)) * present  # (T,)
        curvature = -exponent * ops.power(weights, exponent - 1.0) * present  # (T,) -phi''
        hessian = quad + eye * curvature[None] + eye * (1.0 - present)[None]  # (T, T)
        step = solvers.solve_small(hessian, gradient[:, None])[:, 0]  # (T,)
        candidates = weights[None, :] - sizes * step[None, :]  # (S, T)
        positive = ops.all(candidates > 0.0, axis=1)  # (S,)
        safe = ops.where(positive[:, None], candidates, 1.0)
        decrease = objective(weights) - objective(safe)  # (S,)
        accepted = positive & (decrease >= 1e-4 * sizes[:, 0] * ops.sum(gradient * step))
        # Near the solution f's decrease is below float32 resolution: take full steps there.
        converging = ops.sum(gradient * step) < 1e-6  # () half the squared Newton decrement
        accepted = accepted | (positive & converging & (sizes[:, 0] == 1.0))
        accepted = accepted & ops.all(ops.isfinite(candidates), axis=1)
        first = ops.argmax(ops.cast(accepted, "int32"))  # the largest accepted size
        new = ops.take(candidates, first, axis=0)  # (T,)
        return ops.where(ops.any(accepted), new, weights)

    diagonal = ops.where(present > 0.0, ops.diagonal(quad), 1.0)  # (T,)
    start = ops.power(diagonal, -alpha / (alpha + 1.0))  # (T,) exact for orthogonal gradients
    weights = ops.fori_loop(0, iterations, newton_step, start)
    return weights * ops.power(norm, -alpha / (alpha + 1.0)) * present


@keras_serializable
class FairGrad(GradientWeighting):
    """Fair resource allocation in multi-task learning (Ban and Ji, "Fair
    Resource Allocation in Multi-Task Learning", ICML 2024; reference code
    `OptMN-Lab/fairgrad`, as in LibMTL's `FairGrad` and TorchJD's
    `torchjd.aggregation.FairGrad`).

    The update `d = J^T w = sum_t w_t g_t` is chosen so that the first-order
    decreases of the losses, `g_t . d = (G w)_t`, are an alpha-fair
    allocation (Algorithm 1's step): the weights solve

        (G w)_t = w_t^(-1/alpha)      for every task t, w > 0.

    `alpha = 1` is proportional fairness (the Nash-MTL equation `G w = 1 /
    w`, without Nash-MTL's norm clipping); a larger `alpha` moves towards
    max-min fairness (favouring the task that decreases least), `alpha -> 0`
    towards the plain sum. The reference solves the equation with
    `scipy.optimize.least_squares` from `w = 1/T` on the host; here the
    equivalent convex problem is solved in-graph by Newton steps with a
    line search (`fair_weights`), to float32 rounding in a fixed number of
    steps.

    Absent tasks are left out of the equation (weight 0). Logged weights:
    `w`. As in the reference and LibMTL, defined by default on the gradients
    of the shared parameters; `rep_grad=True` (this project's option, as for
    IMTL and Aligned-MTL) solves the same equation on the Gram matrix of the
    shared features' gradients, at a fraction of the cost.

    Args:
        alpha: fairness parameter `alpha > 0` (LibMTL's default 1).
        iterations: Newton steps of the solver.
        ridge: Tikhonov term of the solver, relative to the Gram matrix's
            Frobenius norm (see `fair_weights`).
        rep_grad: use the shared features' gradients (not in the paper).

    Example:

    >>> weighting = FairGrad(alpha=1.0)  # w = (1, 1/2): G w = (1, 2) = 1 / w
    >>> np.round(weighting.aggregate(np.array([[1.0, 0.0], [0.0, 2.0]], "float32")), 4)
    array([1., 1.], dtype=float32)
    """

    def __init__(self, alpha=1.0, iterations=20, ridge=1e-12, rep_grad=False, **kwargs):
        super().__init__(rep_grad=rep_grad, **kwargs)
        if not float(alpha) > 0.0:
            raise ValueError(f"FairGrad alpha must be > 0, got {alpha}.")
        self.alpha = float(alpha)
        self.iterations = int(iterations)
        self.ridge = float(ridge)

    gramian_weights = True  # the coefficients depend on the gradients through G alone

    def compute_gramian_weights(self, gram, losses, present):
        weights = fair_weights(gram, self.alpha, present, self.iterations, self.ridge)  # (T,)
        return weights, weights

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "iterations": self.iterations,
                "ridge": self.ridge}
