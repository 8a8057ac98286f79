"""FairGrad: alpha-fair shares of the update, `G w = w^(-1/alpha)`."""

from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting import solvers
from keras_mtl.weighting.weighting import GradientWeighting


def fair_weights(gram, alpha, present=None, iterations=30, ridge=1e-6):
    """The FairGrad weights: `w > 0` with `(G w)_t = w_t^(-1/alpha)` for every present t.

    The equation is the stationarity condition of the strictly convex

        f(w) = 1/2 w^T (G + ridge I) w - sum_t phi(w_t),   phi'(w) = w^(-1/alpha)

    (`phi = log` for `alpha = 1`, the Nash-MTL equation `G w = 1 / w`), so
    `f` is minimised by damped Newton steps `w <- w - s H^-1 grad`, with
    `s = 1 / (1 + lambda)` (`lambda` the Newton decrement) shortened
    further if needed to keep every weight positive. As in `nash_weights`,
    the Gram matrix is first divided by its Frobenius norm `n`, and the
    solution `w'` of the normalised problem is rescaled to
    `w = w' n^(-alpha / (alpha + 1))`, which solves the original equation;
    `ridge` (relative to that norm) keeps `f` bounded when the gradients are
    linearly dependent and conflicting, where no exact solution exists.

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

    def body(i, weights):
        gradient = (ops.matmul(quad, weights) - ops.power(weights, exponent)) * present  # (T,)
        curvature = -exponent * ops.power(weights, exponent - 1.0) * present  # (T,) -phi''
        hessian = quad + eye * curvature[None] + eye * (1.0 - present)[None]  # (T, T)
        step = solvers.solve_small(hessian, gradient[:, None])[:, 0]  # (T,)
        decrement = ops.sqrt(ops.maximum(ops.sum(gradient * step), 0.0))
        size = 1.0 / (1.0 + decrement)
        # Fraction to the boundary: at most 90% of the way to w_t = 0 for any t.
        shrinking = ops.where(step > 0.0, step / ops.maximum(weights, 1e-30), 0.0)  # (T,)
        size = ops.minimum(size, 0.9 / ops.maximum(ops.max(shrinking), 1e-30))
        new = weights - size * step
        finite = ops.all(ops.isfinite(new)) & ops.all(new > 0.0)
        return ops.where(finite, new, weights)

    weights = ops.fori_loop(0, iterations, body, ops.ones((num_tasks,), "float32"))
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
    equivalent convex problem is solved in-graph by damped Newton steps
    (`fair_weights`), exact to float32 rounding in a fixed number of steps.

    Absent tasks are left out of the equation (weight 0). Logged weights:
    `w`. As in LibMTL, defined on the gradients of the shared parameters
    (`rep_grad=True` raises).

    Args:
        alpha: fairness parameter `alpha > 0` (LibMTL's default 1).
        iterations: Newton steps of the solver.
        rep_grad: must be `False`.

    Example:

    >>> weighting = FairGrad(alpha=1.0)
    >>> weighting.aggregate(np.array([[1.0, 0.0], [0.0, 2.0]], "float32"))  # w = (1, 1/2): (1, 1)
    """

    supports_rep_grad = False

    def __init__(self, alpha=1.0, iterations=30, rep_grad=False, **kwargs):
        super().__init__(rep_grad=rep_grad, **kwargs)
        if not float(alpha) > 0.0:
            raise ValueError(f"FairGrad alpha must be > 0, got {alpha}.")
        self.alpha = float(alpha)
        self.iterations = int(iterations)

    def compute_direction(self, grads, losses, present):
        gram = solvers.gram_matrix(grads)  # (T, T)
        weights = fair_weights(gram, self.alpha, present, self.iterations)  # (T,)
        return solvers.combine(weights, grads), weights

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "iterations": self.iterations}
