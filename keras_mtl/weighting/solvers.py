"""Small in-graph solvers on `T x T` Gram matrices, for gradient-based weightings.

The reference implementations of MGDA, CAGrad, Nash-MTL and UPGrad call
scipy, cvxpy or quadprog on the host. Here the same problems are solved
with tensor code of a fixed shape and a fixed number of steps, so that a
whole train step compiles with XLA:

- `nonneg_qp`: `min 1/2 x^T Q x + c^T x` subject to `x >= 0` (UPGrad's
  projection onto the dual cone, through `dual_cone_weights`).
- `simplex_qp`: the same over the probability simplex (MGDA's min-norm
  point, through `min_norm_weights`, and CAGrad's inner problem).
- `cagrad_weights`: CAGrad's `min_w  w^T G b + c ||J^T w||` on the simplex.
- `nash_weights`: the Nash bargaining solution `G a = 1 / a`, `a > 0`.

For up to `MAX_EXACT_TASKS` tasks the two QPs are solved exactly by an
active-set enumeration: every support set `S` gives one candidate from a
small linear system (the KKT conditions with the inequalities of `S`
active), all `2^T` candidates are solved as one batched small solve,
clipped to the feasible set, and the candidate of lowest objective is
kept. The optimal support is among them, so the result is exact up to
rounding, and every returned point is feasible even when some systems are
singular. With more tasks, accelerated projected gradient runs a fixed
number of iterations instead.

Every solver takes a `present` mask `(T,)`: tasks with `present == 0` get
weight 0 and are left out of the problem.

Written with `keras.ops`; float32 throughout.
"""

import numpy as np
from keras import ops

MAX_EXACT_TASKS = 10
_FALLBACK_ITERATIONS = 500
_INF = 1e30


# --- small helpers ------------------------------------------------------------------
def gram_matrix(grads):
    """`(T, D) -> (T, T)`: the inner products of the task gradients."""
    grads = ops.cast(grads, "float32")
    return ops.matmul(grads, ops.transpose(grads))  # (T, T)


def combine(weights, grads):
    """`sum_t weights[t] * grads[t]`: `(T,), (T, D) -> (D,)`."""
    return ops.matmul(ops.expand_dims(weights, 0), grads)[0]  # (D,)


def present_mask(present, num_tasks):
    """`present` as a float32 `(T,)` 0/1 vector (all ones when `None`)."""
    if present is None:
        return ops.ones((num_tasks,), "float32")
    return ops.cast(ops.cast(present, "float32") > 0.5, "float32")


def masked_gram(gram, present):
    """The Gram matrix with the rows and columns of absent tasks zeroed."""
    return gram * ops.expand_dims(present, 0) * ops.expand_dims(present, 1)


def normalized_gram(gram, present, norm_eps, reg_eps):
    """The masked Gram matrix over its trace (0 when the trace is below `norm_eps`),
    plus `reg_eps` on the diagonal: the regularised Gramian UPGrad and DualProj
    project with (TorchJD's normalisation)."""
    gram = masked_gram(gram, present)  # (T, T)
    trace = ops.trace(gram)
    gram = ops.where(trace >= norm_eps, gram / ops.maximum(trace, 1e-30), 0.0)
    return gram + reg_eps * ops.eye(gram.shape[0])


def _scale_of(quad):
    """A positive scalar of the order of `quad`'s entries (for conditioning)."""
    return ops.maximum(ops.max(ops.abs(ops.diagonal(quad))), 1e-30)


def _subsets(num_tasks, include_empty):
    """`(K, T)` float32 0/1 rows: every subset of the T tasks."""
    codes = np.arange(0 if include_empty else 1, 2**num_tasks)
    bits = (codes[:, None] >> np.arange(num_tasks)[None, :]) & 1
    return bits.astype("float32")


def _quadratic(x, quad):
    """`x^T Q x` over the last axis of `x` `(..., T)`."""
    return ops.sum(ops.matmul(x, quad) * x, axis=-1)


def solve_small(matrices, rhs):
    """Solves `A x = b` for small `A` `(..., n, n)`, `b` `(..., n, m)`, batched.

    Gauss-Jordan elimination without pivoting, unrolled over the `n`
    columns: a few tensor ops per column, cheap for XLA to compile (a
    general `linalg.solve` compiles to a much larger program). Stable for
    the systems used here (symmetric positive definite blocks, bordered by
    a constraint row); a zero pivot gives non-finite values, which the
    callers treat as "no solution".
    """
    n = matrices.shape[-1]
    augmented = ops.concatenate([matrices, rhs], axis=-1)  # (..., n, n + m)
    for k in range(n):
        pivot_row = augmented[..., k:k + 1, :] / augmented[..., k:k + 1, k:k + 1]  # (..., 1, n + m)
        column = augmented[..., :, k:k + 1]  # (..., n, 1)
        is_pivot = ops.cast(ops.equal(ops.arange(n), k), augmented.dtype)[:, None]  # (n, 1)
        augmented = (augmented - column * pivot_row) * (1.0 - is_pivot) + pivot_row * is_pivot
    return augmented[..., :, n:]


def _solve(matrices, rhs):
    """Batched small solve whose non-finite solutions (singular systems) become 0."""
    solution = solve_small(matrices, rhs)
    return ops.where(ops.isfinite(solution), solution, ops.zeros_like(solution))


# --- projections --------------------------------------------------------------------
def project_simplex(y, present):
    """Euclidean projection of `y` `(T,)` onto the simplex of the present tasks.

    Absent tasks get 0; with no present task the result is all zeros.
    """
    num_tasks = y.shape[-1]
    y = ops.where(present > 0, y, -_INF)  # absent entries sort last, never selected
    u = ops.flip(ops.sort(y), axis=-1)  # (T,) descending
    css = ops.cumsum(u)
    k = ops.arange(1, num_tasks + 1, dtype="float32")
    selected = ops.cast(u - (css - 1.0) / k > 0, "float32")
    rho = ops.maximum(ops.sum(selected), 1.0)
    theta = (ops.take(css, ops.cast(rho, "int32") - 1) - 1.0) / rho
    return ops.maximum(y - theta, 0.0) * present


def _accelerated_projected_gradient(quad, linear, x0, project, iterations):
    """FISTA on `1/2 x^T Q x + c^T x` with step `1 / trace(Q)`."""
    step = 1.0 / ops.maximum(ops.trace(quad), 1e-30)

    def body(i, state):
        x, y, t = state
        gradient = ops.matmul(y, quad) + linear
        x_new = project(y - step * gradient)
        t_new = 0.5 * (1.0 + ops.sqrt(1.0 + 4.0 * t * t))
        y_new = x_new + ((t - 1.0) / t_new) * (x_new - x)
        return x_new, y_new, t_new

    x, _, _ = ops.fori_loop(0, iterations, body, (x0, x0, ops.ones((), "float32")))
    return x


# --- quadratic programs ---------------------------------------------------------------
def nonneg_qp(quad, linear, present=None):
    """Solves `min_x 1/2 x^T Q x + c^T x` subject to `x >= 0`.

    Args:
        quad: `(T, T)` symmetric positive semi-definite `Q`.
        linear: `(T,)` or `(R, T)`: one or R linear terms `c`, solved
            together (they share `Q`).
        present: optional `(T,)` mask; absent coordinates are fixed at 0.

    Returns:
        `x` with the shape of `linear`, `x >= 0`.

    Example:

    >>> np.round(nonneg_qp(np.eye(2, dtype="float32"), np.array([-1.0, 1.0], "float32")), 4)
    array([1., 0.], dtype=float32)
    """
    quad = ops.cast(quad, "float32")
    linear = ops.cast(linear, "float32")
    num_tasks = quad.shape[-1]
    single = len(linear.shape) == 1
    linear = ops.reshape(linear, (-1, num_tasks))  # (R, T)
    present = present_mask(present, num_tasks)
    scale = _scale_of(quad)
    quad, linear = quad / scale, linear / scale  # same minimiser, better conditioned

    if num_tasks <= MAX_EXACT_TASKS:
        subsets = ops.convert_to_tensor(_subsets(num_tasks, include_empty=True))  # (K, T)
        outer = ops.expand_dims(subsets, 2) * ops.expand_dims(subsets, 1)  # (K, T, T)
        # Rows outside S read x_i = 0; rows in S read (Q x + c)_i = 0.
        matrices = quad[None] * outer + ops.eye(num_tasks)[None] * (1.0 - subsets)[:, :, None]
        rhs = -ops.expand_dims(subsets, 1) * ops.expand_dims(linear, 0)  # (K, R, T)
        x = _solve(matrices, ops.transpose(rhs, (0, 2, 1)))  # (K, T, R)
        x = ops.maximum(ops.transpose(x, (0, 2, 1)), 0.0) * ops.expand_dims(subsets, 1)  # (K, R, T)
        objective = 0.5 * _quadratic(x, quad) + ops.sum(x * linear[None], axis=-1)  # (K, R)
        allowed = ops.all(subsets <= present[None], axis=1)  # (K,)
        objective = ops.where(allowed[:, None], objective, _INF)
        best = ops.argmin(objective, axis=0)  # (R,)
        x = ops.take_along_axis(x, best[None, :, None], axis=0)[0]  # (R, T)
    else:
        def solve_one(c):
            return _accelerated_projected_gradient(
                quad, c, ops.zeros((num_tasks,)), lambda y: ops.maximum(y, 0.0) * present,
                _FALLBACK_ITERATIONS)

        x = ops.stack([solve_one(linear[r]) for r in range(linear.shape[0])])
    x = x * present[None]
    return x[0] if single else x


def simplex_qp(quad, linear, present=None):
    """Solves `min_w 1/2 w^T Q w + c^T w` over the simplex of the present tasks.

    Args:
        quad: `(T, T)` symmetric positive semi-definite `Q`.
        linear: `(T,)` linear term `c`.
        present: optional `(T,)` mask; absent tasks get weight 0.

    Returns:
        `w` `(T,)`, `w >= 0`, summing to 1 over the present tasks (all zeros
        when no task is present).

    Example:

    >>> np.round(simplex_qp(np.diag([1.0, 4.0]).astype("float32"), np.zeros(2, "float32")), 4)
    array([0.8, 0.2], dtype=float32)
    """
    quad = ops.cast(quad, "float32")
    linear = ops.cast(linear, "float32")
    num_tasks = quad.shape[-1]
    present = present_mask(present, num_tasks)
    scale = ops.maximum(_scale_of(quad), ops.max(ops.abs(linear)))
    quad, linear = quad / scale, linear / scale

    if num_tasks <= MAX_EXACT_TASKS:
        subsets = ops.convert_to_tensor(_subsets(num_tasks, include_empty=False))  # (K, T)
        num_subsets = subsets.shape[0]
        outer = ops.expand_dims(subsets, 2) * ops.expand_dims(subsets, 1)
        top_left = quad[None] * outer + ops.eye(num_tasks)[None] * (1.0 - subsets)[:, :, None]
        # KKT of the face S: Q_SS w_S + c_S = nu 1, 1^T w_S = 1 (unknowns w and -nu).
        top = ops.concatenate([top_left, subsets[:, :, None]], axis=2)  # (K, T, T+1)
        bottom = ops.concatenate([subsets, ops.zeros((num_subsets, 1))], axis=1)[:, None, :]
        matrices = ops.concatenate([top, bottom], axis=1)  # (K, T+1, T+1)
        rhs = ops.concatenate([-subsets * linear[None], ops.ones((num_subsets, 1))], axis=1)
        w = _solve(matrices, rhs[:, :, None])[:, :num_tasks, 0]  # (K, T)
        w = ops.maximum(w, 0.0) * subsets
        total = ops.sum(w, axis=1, keepdims=True)
        w = ops.where(total > 0, w / ops.maximum(total, 1e-30), subsets / ops.sum(subsets, 1, keepdims=True))
        objective = 0.5 * _quadratic(w, quad) + ops.sum(w * linear[None], axis=-1)  # (K,)
        allowed = ops.all(subsets <= present[None], axis=1)
        objective = ops.where(allowed, objective, _INF)
        w = ops.take(w, ops.argmin(objective), axis=0)  # (T,)
    else:
        count = ops.maximum(ops.sum(present), 1.0)
        w = _accelerated_projected_gradient(
            quad, linear, present / count, lambda y: project_simplex(y, present),
            _FALLBACK_ITERATIONS)
    return w * ops.cast(ops.sum(present) > 0, "float32")


# --- the problems of the methods ------------------------------------------------------
def min_norm_weights(gram, present=None):
    """Convex weights of the min-norm point of the convex hull of the gradients.

    Solves `min_{w in simplex} ||sum_t w_t g_t||^2 = w^T G w` (MGDA, Sener
    and Koltun 2018, and the reference's Frank-Wolfe solver's problem).

    Args:
        gram: `(T, T)` Gram matrix `G = J J^T`.
        present: optional `(T,)` mask.

    Returns:
        `w` `(T,)` on the simplex of the present tasks.

    Example:

    >>> # g1 = (1, 0), g2 = (0, 2): the min-norm point is (0.8, 0.4).
    >>> np.round(min_norm_weights(np.diag([1.0, 4.0]).astype("float32")), 4)
    array([0.8, 0.2], dtype=float32)
    """
    gram = ops.cast(gram, "float32")
    return simplex_qp(gram, ops.zeros((gram.shape[-1],)), present)


def dual_cone_weights(gram, u, present=None):
    """Weights `v` of the projection of `J^T u` onto the dual cone of the rows of J.

    The dual cone is `{x : J x >= 0}`, the directions that conflict with
    no task. By Proposition 1 of Quinton and Rey (2024), the projection is
    `J^T v` with `v = argmin_{v >= u} v^T G v`; with `v = u + x` this is
    the non-negative QP `min_{x >= 0} 1/2 x^T G x + (G u)^T x`.

    Args:
        gram: `(T, T)` Gram matrix `G = J J^T`.
        u: `(T,)` or `(R, T)` weight vectors to project.
        present: optional `(T,)` mask.

    Returns:
        `v` with the shape of `u`, `v >= u` on the present tasks.

    Example:

    >>> # g1 = (1, 0), g2 = (-1, 1): g1 projected onto {x: J x >= 0} is (0.5, 0.5).
    >>> gram = np.array([[1.0, -1.0], [-1.0, 2.0]], "float32")
    >>> np.round(dual_cone_weights(gram, np.array([1.0, 0.0], "float32")), 4)
    array([1. , 0.5], dtype=float32)
    """
    gram = ops.cast(gram, "float32")
    u = ops.cast(u, "float32")
    present = present_mask(present, gram.shape[-1])
    u = u * present
    x = nonneg_qp(gram, ops.matmul(u, gram), present)  # G symmetric: (G u)^T = u^T G
    return u + x


def cagrad_weights(gram, c, present=None, iterations=40):
    """Solves CAGrad's inner problem on the simplex of the present tasks.

    `min_w  w^T G b + c ||g_0|| sqrt(w^T G w)`, with `b` uniform over the
    present tasks and `g_0 = J^T b` the mean gradient (Liu et al. 2021,
    eq. 3's dual). Using `sqrt(q) = min_{s>0} (q / s + s) / 2`, the problem
    is a convex function of the scalar `s` whose value at each `s` is a
    simplex QP (`simplex_qp`); a golden-section search over
    `s in (0, max_t ||g_t||]` with `iterations` steps finds `s`.

    Args:
        gram: `(T, T)` Gram matrix.
        c: the conflict-aversion radius `c >= 0` (CAGrad's `alpha`).
        present: optional `(T,)` mask.
        iterations: golden-section steps (each shrinks the interval by 0.618).

    Returns:
        `w` `(T,)` on the simplex of the present tasks.
    """
    gram = ops.cast(gram, "float32")
    num_tasks = gram.shape[-1]
    present = present_mask(present, num_tasks)
    gram = masked_gram(gram, present)
    scale = _scale_of(gram)
    gram = gram / scale  # same minimiser
    b = present / ops.maximum(ops.sum(present), 1.0)
    linear = ops.matmul(gram, b)  # (T,)
    radius = c * ops.sqrt(ops.maximum(ops.sum(b * linear), 0.0))  # c ||g_0||
    radius = ops.maximum(radius, 1e-12)

    def solve_at(s):
        w = simplex_qp(gram * (radius / s), linear, present)
        value = ops.sum(w * linear) + 0.5 * radius * (_quadratic(w, gram) / s + s)
        return w, value

    golden = (np.sqrt(5.0) - 1.0) / 2.0
    high = ops.sqrt(ops.max(ops.diagonal(gram))) + 1e-6
    low = ops.convert_to_tensor(1e-6, "float32") * high

    def body(i, state):
        lo, hi = state
        left = hi - golden * (hi - lo)
        right = lo + golden * (hi - lo)
        _, value_left = solve_at(left)
        _, value_right = solve_at(right)
        keep_left = value_left <= value_right
        return ops.where(keep_left, lo, left), ops.where(keep_left, right, hi)

    lo, hi = ops.fori_loop(0, iterations, body, (low, high))
    w, _ = solve_at(0.5 * (lo + hi))
    return w


def nash_weights(gram, present=None, iterations=20, ridge=1e-6):
    """The Nash bargaining weights of Navon et al. (2022): `G a = 1 / a`, `a > 0`.

    The solution is the unique minimiser of the self-concordant function
    `f(a) = 1/2 a^T (G + ridge I) a - sum_t log a_t`, found by damped Newton
    steps `a <- a - H^-1 grad / (1 + lambda)` (`lambda` the Newton
    decrement), which stay positive and converge quadratically near the
    solution. The Gram matrix is first divided by its Frobenius norm and
    the solution rescaled, as in the reference code; `ridge` (relative to
    that norm) keeps the problem bounded when the gradients are linearly
    dependent and conflicting, where no exact solution exists.

    Args:
        gram: `(T, T)` Gram matrix.
        present: optional `(T,)` mask; absent tasks get weight 0.
        iterations: Newton steps.
        ridge: relative Tikhonov term.

    Returns:
        `a` `(T,)`, positive on the present tasks.

    Example:

    >>> np.round(nash_weights(np.diag([1.0, 4.0]).astype("float32")), 4)  # a_t = 1 / ||g_t||
    array([1. , 0.5], dtype=float32)
    """
    gram = ops.cast(gram, "float32")
    num_tasks = gram.shape[-1]
    present = present_mask(present, num_tasks)
    gram = masked_gram(gram, present)
    norm = ops.maximum(ops.sqrt(ops.sum(gram * gram)), 1e-30)
    eye = ops.eye(num_tasks)
    absent_eye = eye * (1.0 - present)[None]
    quad = gram / norm + ridge * eye * present[None]

    def body(i, alpha):
        gradient = (ops.matmul(quad, alpha) - 1.0 / alpha) * present  # (T,)
        hessian = quad + eye * (1.0 / (alpha * alpha))[None] * present[None] + absent_eye
        step = solve_small(hessian, gradient[:, None])[:, 0]  # (T,)
        decrement = ops.sqrt(ops.maximum(ops.sum(gradient * step), 0.0))
        new = alpha - step / (1.0 + decrement)
        finite = ops.all(ops.isfinite(new)) & ops.all(new > 0)
        return ops.where(finite, new, alpha)

    alpha = ops.fori_loop(0, iterations, body, ops.ones((num_tasks,), "float32"))
    return alpha / ops.sqrt(norm) * present


def adam_update(value, gradient, first_moment, second_moment, count, learning_rate, mask,
                beta_1=0.9, beta_2=0.999, epsilon=1e-8):
    """One Adam step on a `(T,)` vector, only where `mask` is 1.

    Used by weightings that learn their own per-task parameters (GradNorm's
    weights, IMTL-L's scales). `count` holds the per-task step count (for the
    bias correction), so a task absent from some batches is corrected right.

    Returns:
        `(value, first_moment, second_moment, count)`, updated.
    """
    new_count = count + mask
    new_first = beta_1 * first_moment + (1.0 - beta_1) * gradient
    new_second = beta_2 * second_moment + (1.0 - beta_2) * gradient * gradient
    safe_count = ops.maximum(new_count, 1.0)
    first_hat = new_first / (1.0 - ops.power(beta_1, safe_count))
    second_hat = new_second / (1.0 - ops.power(beta_2, safe_count))
    new_value = value - learning_rate * first_hat / (ops.sqrt(second_hat) + epsilon)
    keep = mask > 0
    return (
        ops.where(keep, new_value, value),
        ops.where(keep, new_first, first_moment),
        ops.where(keep, new_second, second_moment),
        new_count,
    )
