"""The Gramian path (issue 20): weights from the T x T Gram matrix, the step that never
forms the (T, D) matrix, the vectorised per-task gradients and `update_every`."""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers, ops

import keras_mtl
from keras_mtl import weighting as weighting_lib
from keras_mtl.tasks import Classification
from keras_mtl.training import gramian as gramian_lib

GRAMIAN_METHODS = [
    name for name in weighting_lib.names()
    if issubclass(weighting_lib.WEIGHTINGS.lookup(name), weighting_lib.GradientWeighting)
    and weighting_lib.WEIGHTINGS.lookup(name).gramian_weights
]
NOT_GRAMIAN = [
    name for name in weighting_lib.names()
    if issubclass(weighting_lib.WEIGHTINGS.lookup(name), weighting_lib.GradientWeighting)
    and not weighting_lib.WEIGHTINGS.lookup(name).gramian_weights
]
ORTHOGONAL = np.array([[1.0, 0.0], [0.0, 2.0]], "float32")
CONFLICTING = np.array([[1.0, 0.0], [-1.0, 1.0]], "float32")


def make(name, num_tasks, **kwargs):
    cls = weighting_lib.WEIGHTINGS.lookup(name)
    if "seed" in inspect.signature(cls.__init__).parameters:
        kwargs.setdefault("seed", 0)
    weighting = weighting_lib.get(name, **kwargs)
    weighting.set_tasks([Classification(f"t{i}", 2) for i in range(num_tasks)])
    return weighting


def state(weighting):
    return [ops.convert_to_numpy(v).copy() for v in weighting.variables]


def test_the_methods_on_the_path():
    assert set(GRAMIAN_METHODS) >= {"mgda", "upgrad", "imtl", "cagrad", "nash_mtl", "aligned_mtl",
                                    "pcgrad", "gradvac", "gradnorm", "auto"}
    assert {"graddrop", "db_mtl"} <= set(NOT_GRAMIAN)  # per-entry masks, a gradient average


def _cases():
    rng = np.random.default_rng(1)
    random = rng.normal(size=(4, 7)).astype("float32")
    random[1] = -0.7 * random[0] + 0.3 * random[1]  # a conflict
    return [(CONFLICTING, None), (random, np.array([1, 1, 0, 1], "float32"))]


@pytest.mark.parametrize("name", GRAMIAN_METHODS)
def test_weights_from_gramian_give_the_direction_of_aggregate(name):
    """Two weightings alike: `aggregate(J)` and `weights_from_gramian(J J^T) @ J` over two
    calls on each case (the state, e.g. GradVac's targets or IMTL's scales, moves alike).

    `J J^T` is TensorFlow's product, as inside `aggregate`: CAGrad's dual is flat at its
    optimum, and a Gram matrix rounded otherwise (NumPy's) moves its direction by ~1e-4
    relative; the step-level tests below compare the two step paths end to end."""
    for grads, present in _cases():
        num_tasks = len(grads)
        losses = np.linspace(0.5, 2.0, num_tasks).astype("float32")
        full, gramian = make(name, num_tasks), make(name, num_tasks)
        aggregate = tf.function(full.aggregate)
        from_gramian = tf.function(
            lambda g, losses, present: gramian.weights_from_gramian(ops.matmul(g, ops.transpose(g)),
                                                                    losses, present))
        for call in range(2):
            g = grads * (1.0 + 0.5 * call)
            direction = ops.convert_to_numpy(aggregate(g, losses, present))
            weights = ops.convert_to_numpy(from_gramian(g, losses, present))
            np.testing.assert_allclose(weights @ g, direction, rtol=1e-5, atol=1e-5,
                                       err_msg=f"{name} call {call}")
            np.testing.assert_allclose(ops.convert_to_numpy(gramian.current_weights()),
                                       ops.convert_to_numpy(full.current_weights()),
                                       rtol=1e-5, atol=1e-5)
            for a, b in zip(state(full), state(gramian)):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["graddrop", "db_mtl"])
def test_other_methods_refuse_the_gramian_and_update_every(name):
    weighting = make(name, 2)
    with pytest.raises(TypeError, match="Gram matrix"):
        weighting.weights_from_gramian(ORTHOGONAL @ ORTHOGONAL.T)
    with pytest.raises(ValueError, match="update_every=1"):
        weighting_lib.get(name, update_every=3)


# --- update_every on hand-made gradients ----------------------------------------------------
def test_update_every_reuses_the_weights_between_updates():
    weighting = make("mgda", 2, update_every=3)
    assert weighting.get_config()["update_every"] == 3
    grads = [ORTHOGONAL, CONFLICTING, np.array([[2.0, 1.0], [0.0, 1.0]], "float32"), CONFLICTING]
    directions = [ops.convert_to_numpy(weighting.aggregate(g)) for g in grads]
    first = np.array([0.8, 0.2], "float32")  # MGDA on ORTHOGONAL
    np.testing.assert_allclose(directions[0], first @ ORTHOGONAL, rtol=1e-6)
    np.testing.assert_allclose(directions[1], first @ CONFLICTING, rtol=1e-6)  # reused
    np.testing.assert_allclose(directions[2], first @ grads[2], rtol=1e-6)  # reused
    fresh = make("mgda", 2)
    np.testing.assert_allclose(directions[3], ops.convert_to_numpy(fresh.aggregate(CONFLICTING)),
                               rtol=1e-6)  # step 3 recomputes
    assert float(weighting.weight_updates_seen) == 4.0
    restored = weighting_lib.WEIGHTINGS.lookup("mgda").from_config(weighting.get_config())
    assert restored.update_every == 3


# --- the step ---------------------------------------------------------------------------------
def tiny_model(weighting, num_tasks=3):
    images = keras.Input((32, 32, 3))
    x = layers.Rescaling(1 / 255.0)(images)
    p2 = layers.Conv2D(3, 3, strides=8, padding="same")(x)  # (B, 4, 4, 3)
    p3 = layers.AveragePooling2D(2)(p2)
    p4 = layers.Conv2D(4, 1)(p3)
    p5 = layers.AveragePooling2D(2)(p4)
    trunk = keras.Model(images, {"P2": p2, "P3": p3, "P4": p4, "P5": p5}, name="micro_trunk")
    tasks = [Classification(f"t{i}", 2) for i in range(num_tasks)]
    return keras_mtl.MultiTaskModel(trunk, tasks, weighting=weighting)


def batch(num_tasks=3, absent=None):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 32, 32, 3)).astype("uint8")
    targets = {f"t{i}": rng.integers(0, 2, 6).astype("int32") for i in range(num_tasks)}
    if absent is not None:
        targets[f"t{absent}"][:] = -1  # no labels for this task in the batch
    return images, targets


def train(weighting, steps=2, gramian=True, monkeypatch=None, jit_compile=False, absent=None,
          vectorize=None):
    keras.utils.set_random_seed(0)
    model = tiny_model(weighting)
    model.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=jit_compile)
    if monkeypatch is not None:
        monkeypatch.setattr(gramian_lib, "uses_gramian_path",
                            lambda model: gramian and model.weighting.gramian_weights)
        if vectorize is not None:
            monkeypatch.setattr(gramian_lib, "VECTORIZE_FROM_TASKS", 1 if vectorize else 10**9)
    images, targets = batch(absent=absent)
    history = model.fit(images, targets, batch_size=6, epochs=steps, verbose=0).history
    return model, history


def assert_same_models(a, b, atol=1e-5):
    for va, vb in zip(a.trainable_variables, b.trainable_variables):
        np.testing.assert_allclose(ops.convert_to_numpy(va), ops.convert_to_numpy(vb),
                                   rtol=1e-5, atol=atol, err_msg=va.path)
    for va, vb in zip(a.weighting.variables, b.weighting.variables):
        np.testing.assert_allclose(ops.convert_to_numpy(va), ops.convert_to_numpy(vb),
                                   rtol=1e-5, atol=1e-6, err_msg=va.path)


@pytest.mark.parametrize("name, kwargs, absent", [
    ("mgda", {}, None),
    ("mgda", {"rep_grad": True}, 1),
    ("gradvac", {"seed": 0}, None),  # state: the similarity targets
    ("nash_mtl", {}, 2),  # state: the previous weights; the norm clip from G
    ("imtl", {}, None),  # state: the learned loss scales (Adam)
])
def test_gramian_step_equals_the_aggregate_step(name, kwargs, absent, monkeypatch):
    old, old_history = train(weighting_lib.get(name, **kwargs), gramian=False,
                             monkeypatch=monkeypatch, absent=absent)
    new, new_history = train(weighting_lib.get(name, **kwargs), gramian=True,
                             monkeypatch=monkeypatch, absent=absent)
    assert_same_models(old, new)
    np.testing.assert_allclose(new_history["loss"], old_history["loss"], rtol=1e-5)


@pytest.mark.parametrize("rep_grad", [False, True])
def test_vectorized_per_task_gradients_equal_the_loop(rep_grad, monkeypatch):
    loop, _ = train(weighting_lib.get("imtl", rep_grad=rep_grad), monkeypatch=monkeypatch,
                    vectorize=False)
    vectorized, _ = train(weighting_lib.get("imtl", rep_grad=rep_grad), monkeypatch=monkeypatch,
                          vectorize=True)
    assert_same_models(loop, vectorized)


def test_update_every_step_reuses_the_weights_with_xla(tmp_path, monkeypatch):
    """k = 3: steps 1 and 2 take sum_t w_t L_t with step 0's weights (shared parameters)
    and sum_t L_t (heads), checked by hand; XLA-compiled, vectorised per-task gradients;
    a save after step 1 keeps the count."""
    monkeypatch.setattr(gramian_lib, "VECTORIZE_FROM_TASKS", 1)
    model, _ = train(weighting_lib.get("upgrad", update_every=3), steps=1, jit_compile=True)
    weights = ops.convert_to_numpy(model.weighting.reused_coefficients).copy()
    np.testing.assert_allclose(weights, ops.convert_to_numpy(model.weighting.current_weights()))
    assert float(model.weighting.weight_updates_seen) == 1.0

    images, targets = batch()
    variables = model.trainable_variables
    shared = {id(v) for v in model.shared_variables}
    with tf.GradientTape(persistent=True) as tape:
        losses, _ = model.task_losses(targets, model(images, training=True), {})
        weighted = ops.sum(ops.stack(losses) * weights)
        plain = ops.sum(ops.stack(losses))
    expected = [ops.convert_to_numpy(v) - 0.5 * ops.convert_to_numpy(
        tape.gradient(weighted if id(v) in shared else plain, v)) for v in variables]
    del tape
    model.fit(images, targets, batch_size=6, epochs=1, verbose=0)
    for variable, value in zip(variables, expected):
        np.testing.assert_allclose(ops.convert_to_numpy(variable), value, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ops.convert_to_numpy(model.weighting.reused_coefficients),
                                  weights)

    path = str(tmp_path / "every.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.weighting.update_every == 3
    assert float(restored.weighting.weight_updates_seen) == 2.0
    np.testing.assert_array_equal(ops.convert_to_numpy(restored.weighting.reused_coefficients),
                                  weights)


def test_mixed_precision_gives_the_float32_update_on_the_gramian_path():
    """MGDA at the shared features, update_every=2: a recomputing and a reusing step."""
    updates = []
    for policy in ("float32", "mixed_float16"):
        keras.config.set_dtype_policy(policy)
        try:
            keras.utils.set_random_seed(0)
            model = tiny_model(weighting_lib.get("mgda", rep_grad=True, update_every=2))
            model.compile(optimizer=keras.optimizers.SGD(0.5))
            before = [ops.convert_to_numpy(v).copy() for v in model.trainable_variables]
            images, targets = batch()
            model.fit(images, targets, batch_size=6, epochs=2, verbose=0)
            updates.append([b - ops.convert_to_numpy(v)
                            for b, v in zip(before, model.trainable_variables)])
        finally:
            keras.config.set_dtype_policy("float32")
    for full, mixed in zip(*updates):
        # float16 activations: ~1e-3 relative per step; a loss-scale slip would be 2^15x off.
        np.testing.assert_allclose(mixed, full, rtol=5e-2, atol=3e-2 * np.abs(full).max() + 1e-7)
