"""The train step of gradient-based weightings: per-task gradients, rep-grad, heads,
missing labels, regularisation, mixed precision and loss-scale overflow."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers, ops

import keras_mtl
from keras_mtl import weighting as weighting_lib
from keras_mtl.tasks import Classification
from keras_mtl.weighting.weighting import GradientWeighting

COEFFICIENTS = (2.0, 3.0)
LOSS_SCALES = (0.5, 2.0)
LR = 0.1


class FixedCombination(GradientWeighting):
    """Direction = 2 g_a + 3 g_b, on losses scaled by (0.5, 2): easy to check by hand."""

    def compute_direction(self, grads, losses, present):
        weights = ops.convert_to_tensor(COEFFICIENTS, "float32") * present
        return ops.matmul(weights[None], grads)[0], weights

    def loss_scales(self):
        return ops.convert_to_tensor(LOSS_SCALES, "float32")


def tiny_model(weighting, regularized=False):
    images = keras.Input((32, 32, 3))
    x = layers.Rescaling(1 / 255.0)(images)
    p2 = layers.Conv2D(2, 3, strides=4, padding="same", name="trunk_conv")(x)  # (B, 8, 8, 2)
    p3 = layers.AveragePooling2D(2)(p2)  # P3 depends on P2: the features are not independent
    p4 = layers.AveragePooling2D(2)(p3)
    p5 = layers.Dense(4, name="trunk_dense",
                      kernel_regularizer="l2" if regularized else None)(layers.AveragePooling2D(2)(p4))
    trunk = keras.Model(images, {"P2": p2, "P3": p3, "P4": p4, "P5": p5}, name="tiny_trunk")
    tasks = [Classification("a", 3), Classification("b", 2)]
    return keras_mtl.MultiTaskModel(trunk, tasks, weighting=weighting)


def batch(b_labels=(1, 0, 1, 0)):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (4, 32, 32, 3)).astype("uint8")
    targets = {"a": np.array([0, 1, 2, -1], "int32"), "b": np.array(b_labels, "int32")}
    return images, targets


def zeros_for_none(grads, variables):
    return [np.zeros(v.shape, "float32") if g is None else ops.convert_to_numpy(g)
            for g, v in zip(grads, variables)]


def values(variables):
    return [ops.convert_to_numpy(v).copy() for v in variables]


# --- the update, by hand -------------------------------------------------------------------
@pytest.mark.parametrize("rep_grad", [False, True])
def test_update_matches_hand_computed_gradients(rep_grad):
    keras.utils.set_random_seed(0)
    model = tiny_model(FixedCombination(rep_grad=rep_grad), regularized=True)
    model.compile(optimizer=keras.optimizers.SGD(LR))
    images, targets = batch()
    variables = model.trainable_variables
    shared = {id(v) for v in model.trunk.trainable_variables}

    per_task = []
    for index in range(2):
        with tf.GradientTape() as tape:
            losses, _ = model.task_losses(targets, model(images, training=True), {})
            loss = losses[index]
        per_task.append(zeros_for_none(tape.gradient(loss, variables), variables))
    with tf.GradientTape() as tape:
        model(images, training=True)
        regularization = ops.sum(model.losses)
    reg_grads = zeros_for_none(tape.gradient(regularization, variables), variables)

    before = values(variables)
    model.fit(images, targets, batch_size=4, epochs=1, verbose=0)
    for variable, old, g_a, g_b, g_reg in zip(variables, before, *per_task, reg_grads):
        if id(variable) in shared:  # sum_t c_t s_t g_t
            expected = COEFFICIENTS[0] * LOSS_SCALES[0] * g_a + COEFFICIENTS[1] * LOSS_SCALES[1] * g_b
        else:  # each head: its own task's (scaled) gradient
            expected = LOSS_SCALES[0] * g_a + LOSS_SCALES[1] * g_b
        expected = old - LR * (expected + g_reg)
        np.testing.assert_allclose(ops.convert_to_numpy(variable), expected, rtol=1e-4, atol=1e-6,
                                   err_msg=variable.path)


@pytest.mark.slow  # the hand-computed update above covers it
def test_sum_of_gradients_equals_the_equal_weighting():
    class Sum(GradientWeighting):
        def compute_direction(self, grads, losses, present):
            return ops.sum(grads, axis=0), present

    images, targets = batch()
    results = []
    for weighting in (Sum(), "equal"):
        keras.utils.set_random_seed(0)
        model = tiny_model(weighting)
        model.compile(optimizer=keras.optimizers.SGD(LR))
        history = model.fit(images, targets, batch_size=4, epochs=1, verbose=0).history
        results.append((history["loss"][0], values(model.trainable_variables)))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_feature_split_shares_the_layers():
    model = tiny_model("mgda")
    images, _ = batch()
    features = keras.tree.flatten(model.trunk(images))
    outputs = model.feature_split.heads_model(features)
    expected = model(images)
    for name in ("a", "b"):
        np.testing.assert_allclose(ops.convert_to_numpy(outputs[name]),
                                   ops.convert_to_numpy(expected[name]), rtol=1e-5, atol=1e-6)
    view = model.feature_split.heads_model
    model_variables = {id(v) for v in model.variables}
    assert view.variables and all(id(v) in model_variables for v in view.variables)  # no copy
    assert model.feature_split.heads_model is view  # cached per model
    with tf.GradientTape(persistent=True) as tape:
        split_features, leaves, split_outputs = model.feature_split.run(images, tape, False)
        loss = ops.sum(split_outputs["a"])
    for name in ("a", "b"):  # the split run computes the same outputs
        np.testing.assert_allclose(ops.convert_to_numpy(split_outputs[name]),
                                   ops.convert_to_numpy(expected[name]), rtol=1e-5, atol=1e-6)
    # the leaves are watched and cut: the gradient stops there, none reaches the trunk
    grads = tape.gradient(loss, leaves + list(model.trunk.trainable_variables))
    assert any(g is not None for g in grads[:len(leaves)])
    assert all(g is None for g in grads[len(leaves):])


# --- missing labels, frozen trunk ---------------------------------------------------------------
@pytest.mark.parametrize("absent", ["key", "labels"])
def test_missing_task_is_left_out(absent):
    model = tiny_model(weighting_lib.get("gradvac", seed=0))
    model.compile(optimizer=keras.optimizers.SGD(LR))
    images, targets = batch(b_labels=(-1, -1, -1, -1))
    if absent == "key":
        del targets["b"]
    head_b = values(model.get_layer("b_logits").trainable_variables)
    history = model.fit(images, targets, batch_size=4, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and np.isfinite(history["weight/a"][0])
    assert history["weight/b"][0] == 0.0  # left out of the aggregation
    for old, new in zip(head_b, values(model.get_layer("b_logits").trainable_variables)):
        np.testing.assert_array_equal(old, new)
    np.testing.assert_array_equal(ops.convert_to_numpy(model.weighting.target_similarity), 0.0)


def test_frozen_trunk_trains_the_heads_only():
    model = tiny_model("pcgrad")
    model.trunk.trainable = False
    model.compile(optimizer=keras.optimizers.SGD(LR))
    trunk = values(model.trunk.weights)
    head = values(model.get_layer("a_logits").trainable_variables)
    images, targets = batch()
    model.fit(images, targets, batch_size=4, epochs=1, verbose=0)
    for old, new in zip(trunk, values(model.trunk.weights)):
        np.testing.assert_array_equal(old, new)
    assert not np.allclose(head[0], values(model.get_layer("a_logits").trainable_variables)[0])


# --- XLA, mixed precision ----------------------------------------------------------------
def test_rep_grad_fit_with_jit_compile():
    # IMTL: rep-grad, learned loss scales and a linear solve, in one XLA program.
    # (GradDrop's rep-grad default is in test_gradient_methods' jit fit.)
    model = tiny_model(weighting_lib.get("imtl", rep_grad=True, learning_rate=0.1))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=True)
    images, targets = batch()
    history = model.fit(images, targets, batch_size=4, epochs=2, verbose=0).history
    for key in ("loss", "weight/a", "weight/b"):
        assert np.all(np.isfinite(history[key])), key
    assert history["weight/a"][1] != history["weight/a"][0]  # the log-scales are learned


@pytest.mark.parametrize("rep_grad", [
    True,  # float16 features: their gradients are cast and unscaled by the step
    pytest.param(False, marks=pytest.mark.slow),
])
def test_mixed_precision_gives_the_float32_update(rep_grad):
    images, targets = batch()
    updates = []
    for policy in ("float32", "mixed_float16"):
        keras.config.set_dtype_policy(policy)
        keras.utils.set_random_seed(0)
        model = tiny_model(FixedCombination(rep_grad=rep_grad))
        model.compile(optimizer=keras.optimizers.SGD(LR))
        if policy == "mixed_float16":
            assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        before = values(model.trainable_variables)
        model.fit(images, targets, batch_size=4, epochs=1, verbose=0)
        updates.append([b - a for b, a in zip(before, values(model.trainable_variables))])
    keras.config.set_dtype_policy("float32")
    for full, mixed in zip(*updates):
        # float16 rounds each element by ~1e-3 through the network, so single small elements
        # can be a few percent off; a missing unscale or cast would be off by ~100% or 2^15x.
        assert np.linalg.norm(mixed - full) <= 2e-2 * np.linalg.norm(full) + 1e-7


def test_loss_scale_overflow_skips_the_step():
    keras.config.set_dtype_policy("mixed_float16")
    model = tiny_model(weighting_lib.get("gradvac", seed=0))
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(LR), initial_scale=1e30)
    model.compile(optimizer=optimizer)
    before = values(model.trainable_variables)
    images, targets = batch()
    model.fit(images, targets, batch_size=4, epochs=1, verbose=0)
    keras.config.set_dtype_policy("float32")
    for old, new in zip(before, values(model.trainable_variables)):
        np.testing.assert_array_equal(old, new)  # skipped
    assert float(ops.convert_to_numpy(optimizer.dynamic_scale)) == pytest.approx(0.5e30, rel=1e-6)
    np.testing.assert_array_equal(ops.convert_to_numpy(model.weighting.target_similarity), 0.0)
