"""The in-graph solvers of gradient-based weightings, on hand-worked cases."""

import itertools

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_mtl.weighting import solvers


def f32(x):
    return np.asarray(x, "float32")


def numpy(x):
    return ops.convert_to_numpy(x)


def random_jacobian(num_tasks, dim=6, seed=0):
    return np.random.default_rng(seed).normal(size=(num_tasks, dim)).astype("float32")


def simplex_grid(num_tasks, steps):
    """Points of the simplex on a regular grid."""
    for parts in itertools.product(range(steps + 1), repeat=num_tasks - 1):
        if sum(parts) <= steps:
            yield np.array([*parts, steps - sum(parts)], "float64") / steps


# --- linear systems and projections -------------------------------------------------
def test_solve_small_matches_numpy_on_spd_and_bordered_systems():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 4, 4))
    spd = a @ a.transpose(0, 2, 1) + np.eye(4)  # (5, 4, 4)
    rhs = rng.normal(size=(5, 4, 2))
    np.testing.assert_allclose(numpy(solvers.solve_small(f32(spd), f32(rhs))),
                               np.linalg.solve(spd, rhs), rtol=1e-4, atol=1e-4)
    bordered = np.block([[spd[0], np.ones((4, 1))], [np.ones((1, 4)), np.zeros((1, 1))]])
    b = rng.normal(size=(5, 1))
    np.testing.assert_allclose(numpy(solvers.solve_small(f32(bordered), f32(b))),
                               np.linalg.solve(bordered, b), rtol=1e-4, atol=1e-4)


def test_project_simplex():
    ones = f32([1, 1, 1])
    np.testing.assert_allclose(numpy(solvers.project_simplex(f32([0.5, 0.9, -3.0]), ones)),
                               [0.3, 0.7, 0.0], atol=1e-6)
    np.testing.assert_allclose(numpy(solvers.project_simplex(f32([0.2, 0.3, 0.5]), ones)),
                               [0.2, 0.3, 0.5], atol=1e-6)
    # Task 1 absent: (0.5, -3) projected onto the 2-simplex is (1, 0).
    np.testing.assert_allclose(numpy(solvers.project_simplex(f32([0.5, 0.9, -3.0]), f32([1, 0, 1]))),
                               [1.0, 0.0, 0.0], atol=1e-6)


# --- min-norm point (MGDA) ---------------------------------------------------------------
@pytest.mark.parametrize("jacobian, expected", [
    ([[1.0, 0.0], [0.0, 2.0]], [0.8, 0.2]),  # orthogonal: a = 4 (1 - a)
    ([[1.0, 0.0], [-1.0, 1.0]], [0.6, 0.4]),  # conflicting: min (2a - 1)^2 + (1 - a)^2
    ([[1.0, 0.0], [2.0, 0.0]], [1.0, 0.0]),  # parallel: the shorter one, a vertex
    ([[1.0, 0.0], [-1.0, 0.0]], [0.5, 0.5]),  # opposite: 0 is in the hull
    ([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [0.5, 0.5, 0.0]),  # third one dominated
])
def test_min_norm_weights_hand_worked(jacobian, expected):
    jacobian = f32(jacobian)
    weights = numpy(solvers.min_norm_weights(jacobian @ jacobian.T))
    np.testing.assert_allclose(weights, expected, atol=1e-5)


def test_min_norm_weights_beats_a_grid_and_respects_present():
    jacobian = random_jacobian(3, dim=4)
    gram = jacobian @ jacobian.T
    weights = numpy(solvers.min_norm_weights(gram))
    assert weights.min() >= 0 and weights.sum() == pytest.approx(1.0, abs=1e-5)
    best = min(w @ gram @ w for w in simplex_grid(3, 60))
    assert weights @ gram @ weights <= best + 1e-5
    # Absent task 1: the 2-task solution of tasks 0 and 2.
    masked = numpy(solvers.min_norm_weights(gram, f32([1, 0, 1])))
    pair = numpy(solvers.min_norm_weights(gram[np.ix_([0, 2], [0, 2])]))
    np.testing.assert_allclose(masked, [pair[0], 0.0, pair[1]], atol=1e-5)
    np.testing.assert_array_equal(numpy(solvers.min_norm_weights(gram, f32([0, 0, 0]))), 0.0)


# --- non-negative QP and the dual cone (UPGrad) -------------------------------------------
def test_nonneg_qp_kkt_on_random_problems():
    for seed in range(3):
        jacobian = random_jacobian(4, dim=5, seed=seed)
        gram = jacobian @ jacobian.T
        linear = np.random.default_rng(seed).normal(size=(3, 4)).astype("float32")
        x = numpy(solvers.nonneg_qp(gram, linear))  # (3, 4): three problems at once
        gradient = x @ gram + linear
        assert x.min() >= 0
        assert gradient.min() >= -1e-4  # dual feasibility
        np.testing.assert_allclose(np.sum(x * gradient, axis=1), 0.0, atol=1e-4)  # complementarity


def test_dual_cone_weights_hand_worked():
    # g1 = (1, 0), g2 = (-1, 1). Projecting g1 / 2 onto {x: J x >= 0} removes its
    # component along -g2: (0.25, 0.25) = 0.5 g1 + 0.25 g2; g2 / 2 becomes (0, 0.5).
    jacobian = f32([[1.0, 0.0], [-1.0, 1.0]])
    gram = jacobian @ jacobian.T
    weights = numpy(solvers.dual_cone_weights(gram, f32([[0.5, 0.0], [0.0, 0.5]])))
    np.testing.assert_allclose(weights, [[0.5, 0.25], [0.5, 0.5]], atol=1e-5)


def test_dual_cone_weights_never_conflict():
    jacobian = random_jacobian(4, dim=3, seed=1)  # 4 tasks in 3-D: conflicts are certain
    gram = jacobian @ jacobian.T
    u = np.eye(4, dtype="float32") / 4
    v = numpy(solvers.dual_cone_weights(gram, u))
    assert np.all(v >= u - 1e-6)
    directions = v @ jacobian  # (4, 3) the projections
    assert (directions @ jacobian.T).min() >= -1e-4
    # A vector already in the cone is unchanged.
    inside = numpy(solvers.dual_cone_weights(f32(np.eye(2)), f32([0.3, 0.7])))
    np.testing.assert_allclose(inside, [0.3, 0.7], atol=1e-6)


# --- CAGrad ---------------------------------------------------------------------------
@pytest.mark.parametrize("num_tasks, steps", [(2, 2000), (3, 80)])
def test_cagrad_weights_minimise_the_dual(num_tasks, steps):
    jacobian = random_jacobian(num_tasks, dim=4, seed=num_tasks)
    gram = (jacobian @ jacobian.T).astype("float64")
    c = 0.5
    b = np.ones(num_tasks) / num_tasks
    radius = c * np.sqrt(b @ gram @ b)

    def objective(w):
        return w @ gram @ b + radius * np.sqrt(max(w @ gram @ w, 0.0))

    weights = numpy(solvers.cagrad_weights(f32(gram), c)).astype("float64")
    assert weights.min() >= 0 and weights.sum() == pytest.approx(1.0, abs=1e-5)
    best = min(objective(w) for w in simplex_grid(num_tasks, steps))
    assert objective(weights) <= best + 1e-4 * abs(best) + 1e-6


# --- Nash bargaining -----------------------------------------------------------------
def test_nash_weights_solve_g_a_equals_one_over_a():
    np.testing.assert_allclose(numpy(solvers.nash_weights(f32(np.diag([1.0, 4.0])))), [1.0, 0.5],
                               rtol=1e-4)
    for jacobian in ([[1.0, 0.0], [-1.0, 1.0]], random_jacobian(3, dim=5)):
        jacobian = f32(jacobian)
        gram = jacobian @ jacobian.T
        alpha = numpy(solvers.nash_weights(gram))
        assert alpha.min() > 0
        np.testing.assert_allclose(alpha * (gram @ alpha), 1.0, rtol=1e-3)
    # An absent task gets 0 and the others solve their own problem.
    gram = np.diag([1.0, 9.0, 4.0]).astype("float32")
    np.testing.assert_allclose(numpy(solvers.nash_weights(gram, f32([1, 0, 1]))), [1.0, 0.0, 0.5],
                               rtol=1e-4)


# --- fallback for many tasks, adam ---------------------------------------------------------
def test_iterative_fallback_agrees_with_the_exact_solvers(monkeypatch):
    jacobian = random_jacobian(3, dim=4, seed=2)
    gram = tf.constant(jacobian @ jacobian.T)
    u = tf.eye(3) / 3

    def solve(gram):
        return solvers.min_norm_weights(gram), solvers.dual_cone_weights(gram, u)

    exact = tf.function(solve)(gram)
    monkeypatch.setattr(solvers, "MAX_EXACT_TASKS", 1)  # read when traced
    fallback = tf.function(solve)(gram)
    for a, b in zip(exact, fallback):
        np.testing.assert_allclose(numpy(a), numpy(b), atol=2e-3)


def test_adam_update_moves_only_masked_entries():
    value, m, v, count = (f32([1.0, 1.0]), f32([0, 0]), f32([0, 0]), f32([0, 0]))
    new = [numpy(x) for x in solvers.adam_update(value, f32([1.0, 1.0]), m, v, count, 0.1, f32([1, 0]))]
    np.testing.assert_allclose(new[0], [0.9, 1.0], atol=1e-6)  # first Adam step = lr * sign
    np.testing.assert_allclose(new[3], [1.0, 0.0])
