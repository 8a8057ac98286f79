"""Gradient-based weightings: `aggregate` on hand-worked gradients, absent tasks, a jit fit."""

import inspect
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers, ops

import keras_mtl
from keras_mtl import weighting as weighting_lib
from keras_mtl.tasks import Classification
from keras_mtl.weighting.aligned_mtl import alignment_matrix

GRADIENT_METHODS = [
    name for name in weighting_lib.names()
    if issubclass(weighting_lib.WEIGHTINGS.lookup(name), weighting_lib.GradientWeighting)
]
ORTHOGONAL = np.array([[1.0, 0.0], [0.0, 2.0]], "float32")
CONFLICTING = np.array([[1.0, 0.0], [-1.0, 1.0]], "float32")  # 135 degrees apart


def make(name, num_tasks=2, **kwargs):
    cls = weighting_lib.WEIGHTINGS.lookup(name)
    if "seed" in inspect.signature(cls.__init__).parameters:
        kwargs.setdefault("seed", 0)
    weighting = weighting_lib.get(name, **kwargs)
    weighting.set_tasks([Classification(f"t{i}", 2) for i in range(num_tasks)])
    return weighting


def aggregate(weighting, grads, losses=None, present=None):
    grads = np.asarray(grads, "float32")
    losses = np.ones(len(grads), "float32") if losses is None else np.asarray(losses, "float32")
    present = np.ones(len(grads), "float32") if present is None else np.asarray(present, "float32")
    if isinstance(weighting, weighting_lib.CAGrad):  # its solver's loops are slow when eager
        return ops.convert_to_numpy(tf.function(weighting.aggregate)(grads, losses, present))
    return ops.convert_to_numpy(weighting.aggregate(grads, losses, present))


def weights_of(weighting):
    return ops.convert_to_numpy(weighting.current_weights())


def cagrad_reference(grads, c=0.5, rescale_by=1.25):
    """CAGrad on two tasks: the dual minimised on a fine grid (as SLSQP would)."""
    grads = grads.astype("float64")
    g0 = grads.mean(0)
    radius = c * np.linalg.norm(g0)
    candidates = [a * grads[0] + (1 - a) * grads[1] for a in np.linspace(0, 1, 20001)]
    g_w = min(candidates, key=lambda g: g @ g0 + radius * np.linalg.norm(g))
    return (g0 + radius * g_w / np.linalg.norm(g_w)) / rescale_by


def aligned_reference(grads):
    """Aligned-MTL from the SVD: J = U S W^T, d = sigma_min W U^T 1."""
    u, s, wt = np.linalg.svd(grads.astype("float64"), full_matrices=False)
    return s.min() * (wt.T @ u.T @ np.ones(len(grads)))


# --- every method -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_documented_and_configurable(name):
    cls = weighting_lib.WEIGHTINGS.lookup(name)
    assert re.search(r"(19|20)\d\d", cls.__doc__), "the docstring cites the paper"
    assert "Example" in cls.__doc__
    config = make(name).get_config()
    assert "rep_grad" in config
    restored = weighting_lib.get({"class_name": name, "config": config})
    assert restored.get_config() == config


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_single_task_gives_its_own_gradient(name):
    weighting = make(name, num_tasks=1)
    grad = np.array([[1.0, 2.0, -2.0]], "float32")
    direction = aggregate(weighting, grad)
    scale = {
        "cagrad": (1 + 0.5) / (1 + 0.5**2),  # g0 + c ||g0|| g / ||g||, rescaled by 1 + c^2
        "nash_mtl": 1.0 / 3.0,  # a = 1 / ||g||: the unit gradient
        "db_mtl": 0.1,  # the moving average after one step: (1 - 0.9) g
        "fairgrad": 1.0 / 3.0,  # alpha = 1: w = 1 / ||g||, the unit gradient
        "moco": 0.5 / 3.0,  # y = beta_1 L g / ||g|| with beta_1 = 0.5, L = 1
    }.get(name, 1.0)
    expected = scale * grad[0]
    if name == "adatask":  # Adam's first step: m_hat / sqrt(v_hat) = g / |g|, entry by entry
        expected = np.sign(grad[0])
    np.testing.assert_allclose(direction, expected, rtol=1e-4, atol=1e-5)
    assert np.all(np.isfinite(weights_of(weighting)))


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_orthogonal_gradients(name):
    expected = {
        "gradnorm": [1.0, 2.0],  # the plain sum at the first step (w = 1)
        "pcgrad": [1.0, 2.0],  # nothing conflicts
        "gradvac": [1.0, 2.0],  # cosine 0 is not below the initial target 0
        "graddrop": [1.0, 2.0],  # each entry has one sign
        "mgda": [0.8, 0.4],  # min over a of a^2 + 4 (1 - a)^2: a = 0.8
        "imtl": [2 / 3, 2 / 3],  # a1 = 2 a2, a1 + a2 = 1: equal projections 2/3
        "nash_mtl": [0.5**0.5, 0.5**0.5],  # a = (1, 1/2): d = (1, 1), clipped to norm 1
        "aligned_mtl": [1.0, 1.0],  # B = diag(1, 1/2): unit-norm, orthogonal
        "upgrad": [0.5, 1.0],  # no conflict: the mean
        "cagrad": cagrad_reference(ORTHOGONAL),
        "config": [1.5, 1.5],  # v = (1, 1): projections 1/sqrt 2 and 2/sqrt 2 along (1, 1)/sqrt 2
        "dualproj": [0.5, 1.0],  # no conflict: the mean
        "fairgrad": [1.0, 1.0],  # w_t = 1 / ||g_t||
        "krum": [1.0, 0.0],  # two tasks: equal scores, the first is kept
        "trimmed_mean": [0.5, 1.0],  # two tasks: nothing to trim, the mean
        "moco": [0.25, 0.25],  # y = (1/2) g / ||g|| (L = 1), lambda stays uniform
        "cr_mogm": [0.9 * 0.5 + 0.1 * 0.8, (0.9 * 0.5 + 0.1 * 0.2) * 2.0],  # EMA of (1/2, 1/2)
        "excess_mtl": [1.0, 2.0],  # the baseline step: weights 1
        # lambda = proj((1/2, 1/2) - 0.001 ((1/2, 2) + 0.1 (1/2, 1/2))) = (0.50075, 0.49925)
        "modo": [0.50075, 2 * 0.49925],
    }
    direction = aggregate(make(name), ORTHOGONAL)
    assert np.all(np.isfinite(direction))
    if name in expected:
        np.testing.assert_allclose(direction, expected[name], rtol=1e-3, atol=1e-4)


# --- the defining property of each method on two conflicting gradients --------------------------
def check_pcgrad(name):
    weighting = make(name)
    direction = aggregate(weighting, CONFLICTING)
    # g1' = g1 - (g1.g2)/|g2|^2 g2 = (0.5, 0.5), g2' = g2 - (g2.g1)/|g1|^2 g1 = (0, 1).
    np.testing.assert_allclose(direction, [0.5, 1.5], atol=1e-5)
    w = weights_of(weighting)  # direction = w1 g1 + w2 g2, g1' = g1 + (w2 - 1) g2
    np.testing.assert_allclose(w @ CONFLICTING, direction, atol=1e-5)
    g1_projected = CONFLICTING[0] + (w[1] - 1) * CONFLICTING[1]
    assert abs(g1_projected @ CONFLICTING[1]) < 1e-5  # the conflicting component is gone


def check_gradvac(name):
    weighting = make(name, beta=0.5)
    np.testing.assert_allclose(aggregate(weighting, CONFLICTING), [0.5, 1.5], atol=1e-5)  # = PCGrad
    # The target moved towards the observed cosine -1/sqrt(2), symmetric, by beta.
    targets = ops.convert_to_numpy(weighting.target_similarity)
    np.testing.assert_allclose(targets, 0.5 * -(0.5**0.5) * (1 - np.eye(2)), atol=1e-5)
    # With a target of 0.5, g1 is vaccinated until cos(g1', g2) = 0.5 exactly.
    weighting.target_similarity.assign(np.full((2, 2), 0.5, "float32"))
    aggregate(weighting, CONFLICTING)
    w = weights_of(weighting)
    g1_new = CONFLICTING[0] + (w[1] - 1) * CONFLICTING[1]
    cosine = g1_new @ CONFLICTING[1] / np.linalg.norm(g1_new) / np.linalg.norm(CONFLICTING[1])
    assert cosine == pytest.approx(0.5, abs=1e-4)


def check_mgda(name):
    weighting = make(name)
    direction = aggregate(weighting, CONFLICTING)
    # min over a of |a g1 + (1 - a) g2|^2 = (2a - 1)^2 + (1 - a)^2: a = 0.6, d = (0.2, 0.4).
    np.testing.assert_allclose(direction, [0.2, 0.4], atol=1e-5)
    np.testing.assert_allclose(weights_of(weighting), [0.6, 0.4], atol=1e-5)
    # An interior min-norm point has equal inner products |d|^2 with every gradient.
    np.testing.assert_allclose(CONFLICTING @ direction, direction @ direction, atol=1e-5)
    # "l2" normalisation: the weights are those of the unit gradients.
    units = CONFLICTING / np.linalg.norm(CONFLICTING, axis=1, keepdims=True)
    normalised, reference = make(name, normalization="l2"), make(name)
    direction = aggregate(normalised, CONFLICTING)
    aggregate(reference, units)
    np.testing.assert_allclose(weights_of(normalised), weights_of(reference), atol=1e-5)
    np.testing.assert_allclose(direction, weights_of(reference) @ CONFLICTING, atol=1e-5)  # raw rows


def check_upgrad(name):
    direction = aggregate(make(name), CONFLICTING)
    assert (CONFLICTING @ direction).min() >= -1e-4  # conflicts with no task
    # Mean of g1/2 projected to (0.25, 0.25) and g2/2 projected to (0, 0.5).
    np.testing.assert_allclose(direction, [0.25, 0.75], atol=1e-3)
    # 4 conflicting tasks in 5-D. Exact without the regularisation of the Gram matrix
    # (reg_eps, as in TorchJD, allows g_t.d >= -reg_eps trace(G) v_t).
    many = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    assert (many @ many.T).min() < 0
    direction = aggregate(make(name, num_tasks=4, reg_eps=0.0), many)
    assert np.linalg.norm(direction) > 1e-3
    assert (many @ direction).min() >= -1e-5


def check_imtl(name):
    weighting = make(name, mode="gradient")
    direction = aggregate(weighting, CONFLICTING)
    units = CONFLICTING / np.linalg.norm(CONFLICTING, axis=1, keepdims=True)
    projections = units @ direction
    assert projections[0] == pytest.approx(projections[1], abs=1e-5)  # impartial
    assert weights_of(weighting).sum() == pytest.approx(1.0, abs=1e-5)
    # Hybrid: the log-scales move towards -log L (exp(s) L -> 1).
    hybrid = make(name, mode="hybrid", learning_rate=0.1)
    for _ in range(3):
        aggregate(hybrid, CONFLICTING, losses=[4.0, 0.25])
    scales = ops.convert_to_numpy(hybrid.log_scales)
    assert scales[0] < 0 < scales[1]


def check_cagrad(name):
    np.testing.assert_allclose(aggregate(make(name, c=0.0), CONFLICTING), CONFLICTING.mean(0),
                               atol=1e-6)  # c = 0: the mean gradient
    direction = aggregate(make(name, c=0.5, rescale=0), CONFLICTING)
    np.testing.assert_allclose(direction, cagrad_reference(CONFLICTING, rescale_by=1.0), atol=1e-3)
    g0 = CONFLICTING.mean(0)
    assert np.linalg.norm(direction - g0) == pytest.approx(0.5 * np.linalg.norm(g0), rel=1e-4)
    # No direction in the ball does better for the worst task.
    angles = np.linspace(0, 2 * np.pi, 3600)
    ball = g0 + 0.5 * np.linalg.norm(g0) * np.stack([np.cos(angles), np.sin(angles)], 1)
    assert (CONFLICTING @ direction).min() >= (ball @ CONFLICTING.T).min(1).max() - 1e-4


def check_nash_mtl(name):
    weighting = make(name, max_norm=0.0)
    direction = aggregate(weighting, CONFLICTING)
    alpha = weights_of(weighting)
    np.testing.assert_allclose(alpha * (CONFLICTING @ direction), 1.0, rtol=1e-3)  # g_t.d = 1/a_t
    clipped = aggregate(make(name, max_norm=0.1), CONFLICTING)
    assert np.linalg.norm(clipped) == pytest.approx(0.1, rel=1e-4)


def check_aligned_mtl(name):
    direction = aggregate(make(name), CONFLICTING)
    np.testing.assert_allclose(direction, aligned_reference(CONFLICTING), atol=1e-4)
    # The aligned gradients B J are orthogonal with equal norms sigma_min.
    gram = CONFLICTING @ CONFLICTING.T
    matrix = ops.convert_to_numpy(alignment_matrix(gram, np.ones(2, "float32")))
    aligned = matrix @ CONFLICTING
    np.testing.assert_allclose(aligned @ aligned.T, np.linalg.eigvalsh(gram).min() * np.eye(2),
                               atol=1e-5)


def check_graddrop(name):
    direction = aggregate(make(name), CONFLICTING)
    # Entry 0: +1 and -1 conflict, purity 1/2, one sign survives; entry 1: only +1.
    assert direction[0] in (1.0, -1.0) and direction[1] == pytest.approx(1.0)
    assert np.allclose(aggregate(make(name, leak=1.0), CONFLICTING), CONFLICTING.sum(0))
    # Entries with +1 and -3: purity 1/4, so about a quarter keep the positive sign.
    wide = np.stack([np.ones(4000), -3 * np.ones(4000)]).astype("float32")
    kept = aggregate(make(name), wide)
    assert set(np.unique(kept)) <= {1.0, -3.0}
    assert np.mean(kept > 0) == pytest.approx(0.25, abs=0.04)


def check_gradnorm(name):
    weighting = make(name, alpha=1.5)
    direction = aggregate(weighting, ORTHOGONAL, losses=[1.0, 1.0])
    np.testing.assert_allclose(direction, ORTHOGONAL.sum(0), atol=1e-6)  # w = 1 at first
    # Equal training rates, |g1| = 1 < mean 1.5 < |g2| = 2: w1 goes up, w2 down, sum kept.
    w = ops.convert_to_numpy(weighting.loss_weights)
    assert w[0] > 1.0 > w[1] and w.sum() == pytest.approx(2.0, abs=1e-5)
    for _ in range(40):
        scales = ops.convert_to_numpy(weighting.loss_scales())
        aggregate(weighting, ORTHOGONAL * scales[:, None], losses=[1.0, 1.0])
    w = ops.convert_to_numpy(weighting.loss_weights)
    assert w[0] == pytest.approx(2 * w[1], rel=0.1)  # weighted norms balanced: w1 = 2 w2


def check_db_mtl(name):
    """Two steps with beta = 1/2 worked out by hand."""
    weighting = make(name, beta=0.5)
    # Step 1: averages (1/2) g = [.5, 0], [-.5, .5]; norms .5 and .5 sqrt 2;
    # alpha = (sqrt 2, 1); direction = sqrt 2 [.5, 0] + [-.5, .5].
    direction = aggregate(weighting, CONFLICTING)
    np.testing.assert_allclose(direction, [0.5 * 2**0.5 - 0.5, 0.5], rtol=1e-5)
    np.testing.assert_allclose(weights_of(weighting), [2**0.5, 1.0], rtol=1e-5)
    # Step 2, g = [2, 0], [0, 1]: averages [1.25, 0], [-.25, .75]; norms 1.25 and
    # sqrt(.625); alpha = (1, 1.25 / sqrt(.625)).
    direction = aggregate(weighting, [[2.0, 0.0], [0.0, 1.0]])
    alpha = 1.25 / 0.625**0.5
    np.testing.assert_allclose(direction, [1.25 - 0.25 * alpha, 0.75 * alpha], rtol=1e-5)
    np.testing.assert_allclose(weights_of(weighting), [1.0, alpha], rtol=1e-5)
    # Rows are gradients of log(L + eps): the objective scales are 1 / L.
    scales = ops.convert_to_numpy(weighting.objective_scales(np.array([0.5, 4.0], "float32")))
    np.testing.assert_allclose(scales, [2.0, 0.25], rtol=1e-6)


CONFLICT_CHECKS = {
    "db_mtl": check_db_mtl,
    "pcgrad": check_pcgrad, "gradvac": check_gradvac, "mgda": check_mgda, "upgrad": check_upgrad,
    "imtl": check_imtl, "cagrad": check_cagrad, "nash_mtl": check_nash_mtl,
    "aligned_mtl": check_aligned_mtl, "graddrop": check_graddrop, "gradnorm": check_gradnorm,
}


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_conflicting_gradients(name):
    if name in CONFLICT_CHECKS:
        CONFLICT_CHECKS[name](name)
    else:  # a method without a hand-worked case: at least finite
        assert np.all(np.isfinite(aggregate(make(name), CONFLICTING)))


# --- absent tasks, rep-grad ------------------------------------------------------------------
@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_absent_task_is_left_out(name):
    # D = 4, so that only (T, T) state has a second axis of length 3.
    grads3 = np.array([[1.0, 0.0, 0.5, 0.3], [7.0, -7.0, 7.0, 7.0], [-1.0, 1.0, 0.2, -0.4]],
                      "float32")
    with_absent = make(name, num_tasks=3)
    with_absent.build_gradient_state(grads3.shape[1])  # D-sized state exists before the step
    state_before = {v.path: ops.convert_to_numpy(v).copy() for v in with_absent.variables}
    direction = aggregate(with_absent, grads3, losses=[1.0, 5.0, 2.0], present=[1, 0, 1])
    reference = aggregate(make(name, num_tasks=2), grads3[[0, 2]], losses=[1.0, 2.0])
    np.testing.assert_allclose(direction, reference, rtol=1e-4, atol=1e-5)
    assert np.all(np.isfinite(weights_of(with_absent)))
    # The absent task's own state (rows, columns, entries of index 1) is untouched.
    for variable in with_absent.variables:
        before, after = state_before[variable.path], ops.convert_to_numpy(variable)
        if variable.path.endswith("task_weights") or before.ndim == 0 or before.shape[0] != 3:
            continue
        np.testing.assert_array_equal(after[1], before[1], err_msg=variable.path)
        if before.ndim == 2 and before.shape[1] == 3:
            np.testing.assert_array_equal(after[:, 1], before[:, 1], err_msg=variable.path)


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_rep_grad_support_is_explicit(name):
    cls = weighting_lib.WEIGHTINGS.lookup(name)
    if cls.supports_rep_grad:
        assert weighting_lib.get(name, rep_grad=True).rep_grad
    else:
        with pytest.raises(ValueError, match="rep_grad"):
            weighting_lib.get(name, rep_grad=True)


def test_no_task_present_gives_zero_direction():
    for name in ("mgda", "upgrad", "cagrad", "nash_mtl", "imtl", "aligned_mtl"):
        direction = aggregate(make(name), CONFLICTING, present=[0, 0])
        np.testing.assert_array_equal(direction, 0.0, err_msg=name)


# --- one jit-compiled fit step per method ---------------------------------------------------
def tiny_model(weighting):
    images = keras.Input((32, 32, 3))
    x = layers.Rescaling(1 / 255.0)(images)
    p2 = layers.Conv2D(2, 3, strides=4, padding="same")(x)  # (B, 8, 8, 2)
    p3 = layers.AveragePooling2D(2)(p2)
    p4 = layers.AveragePooling2D(2)(p3)
    p5 = layers.Conv2D(4, 2, strides=2)(p4)  # (B, 1, 1, 4)
    trunk = keras.Model(images, {"P2": p2, "P3": p3, "P4": p4, "P5": p5}, name="tiny_trunk")
    tasks = [Classification("a", 3), Classification("b", 2)]
    return keras_mtl.MultiTaskModel(trunk, tasks, weighting=weighting)


# Three methods in the default run (a solver, a projection, a stateful one); all under -m slow.
FIT_DEFAULT = ("mgda", "pcgrad", "db_mtl")


@pytest.mark.parametrize("name", [
    name if name in FIT_DEFAULT else pytest.param(name, marks=pytest.mark.slow)
    for name in GRADIENT_METHODS])
def test_fit_step_with_jit_compile(name):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (4, 32, 32, 3)).astype("uint8")
    targets = {"a": np.array([0, 1, 2, -1], "int32"), "b": np.array([1, 0, 1, 0], "int32")}
    model = tiny_model(weighting_lib.get(name))
    model.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=True)
    history = model.fit(images, targets, batch_size=4, epochs=1, verbose=0).history
    for key in ("loss", "a_loss", "b_loss", "weight/a", "weight/b"):
        assert np.isfinite(history[key][0]), key


def test_db_mtl_buffer_is_sized_by_the_shared_parameters_and_saved(tmp_path):
    model = tiny_model(weighting_lib.get("db_mtl"))
    shared = sum(int(np.prod(v.shape)) for v in model.shared_variables)
    assert tuple(model.weighting.gradient_buffer.shape) == (2, shared)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (4, 32, 32, 3)).astype("uint8")
    targets = {"a": np.array([0, 1, 2, 1], "int32"), "b": np.array([1, 0, 1, 0], "int32")}
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    model.fit(images, targets, batch_size=4, epochs=1, verbose=0)
    average = ops.convert_to_numpy(model.weighting.gradient_buffer)
    assert np.abs(average).sum() > 0.0  # the step updated the moving average
    path = str(tmp_path / "db.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(ops.convert_to_numpy(restored.weighting.gradient_buffer), average)
    with pytest.raises(ValueError, match="shared parameters"):
        restored.weighting.build_gradient_state(shared + 1)
