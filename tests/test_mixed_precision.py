"""Mixed precision end to end: loss scaling with per-task gradients, float32 task
weights and log-variances, float32 serving signature."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mtl as mtl
from keras_mtl.data import shapes


def _model(weighting, policy):
    keras.config.set_dtype_policy(policy)  # the conftest fixture resets it to float32
    tasks = [mtl.tasks.Classification("label", 3), mtl.tasks.Segmentation("mask", 4)]
    return mtl.build_mtl(tasks, trunk="micro_resnet", weights=None, input_shape=(32, 32, 3),
                         weighting=weighting)


def _data():
    return shapes.make_dataset(16, image_size=32, batch_size=8, seed=0, cache=True,
                               tasks=["label", "mask"])


@pytest.mark.parametrize("policy,weighting", [("mixed_float16", "uncertainty"),
                                              ("mixed_bfloat16", "famo")])
def test_fit_and_export_under_mixed_precision(tmp_path, policy, weighting):
    model = _model(weighting, policy)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    if policy == "mixed_float16":  # Keras wraps the optimizer for loss scaling
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.trunk.compute_dtype == policy.removeprefix("mixed_")
    history = model.fit(_data(), epochs=3, verbose=0).history
    assert np.isfinite(history["loss"][-1])
    assert history["loss"][-1] < history["loss"][0]
    # Variables, learned task weights and log-variances stay float32.
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    assert all(v.dtype in ("float32", "int32", "int64") for v in model.weighting.variables)
    assert isinstance(history["weight/label"][-1], float)
    outputs = model(np.zeros((1, 32, 32, 3), "float32"))
    assert all(value.dtype == "float32" for value in outputs.values())  # raw head outputs
    # The SavedModel serves float32 pixels and returns float32 / int32 outputs.
    path = str(tmp_path / "export")
    model.export(path, verbose=False)
    served = tf.saved_model.load(path).signatures["serving_default"]
    assert served.structured_input_signature[1]["images"].dtype == tf.float32
    assert served.structured_outputs["label"].dtype == tf.float32
    assert served.structured_outputs["mask"].dtype == tf.int32
    images = next(iter(_data()))[0].numpy()
    served_outputs = served(images=tf.constant(images, tf.float32))
    expected = model.predict(images, verbose=0)
    np.testing.assert_allclose(served_outputs["label"].numpy(), expected["label"], atol=2e-2)
    # Low-precision logits: a few near-tied pixels may take the other class.
    assert np.mean(served_outputs["mask"].numpy() == expected["mask"]) > 0.98


def test_loss_scaling_with_per_task_gradients_skips_overflow_and_keeps_state():
    """A gradient-based weighting under mixed_float16: an overflowing loss scale skips the
    step (weights, the weighting's EMA and the step count untouched) and halves the scale;
    with a sane scale the per-task gradients are unscaled before GradVac aggregates them,
    so the update is the float32 one up to float16 rounding."""
    model = _model(mtl.weighting.get("gradvac", seed=1), "mixed_float16")
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.05),
                                                    initial_scale=2.0**40)
    model.compile(optimizer=optimizer)
    ema = np.array(model.weighting.target_similarity)
    trainable = [np.array(v) for v in model.trainable_variables]
    model.fit(_data(), epochs=1, steps_per_epoch=1, verbose=0)
    assert float(model.optimizer.dynamic_scale) == 2.0**39  # overflow: halved, skipped
    for got, expected in zip(model.trainable_variables, trainable):  # (BatchNorm stats move)
        np.testing.assert_array_equal(np.asarray(got), expected)
    np.testing.assert_array_equal(np.asarray(model.weighting.target_similarity), ema)
    assert int(model.optimizer.iterations) == 0

    before_step = model.get_weights()  # the float32 reference starts here
    model.optimizer.dynamic_scale.assign(2.0**8)
    model.fit(_data(), epochs=1, steps_per_epoch=1, verbose=0)  # the same first batch
    assert int(model.optimizer.iterations) == 1
    assert not np.array_equal(np.asarray(model.weighting.target_similarity), ema)
    mixed = {v.path: np.asarray(v) for v in model.trainable_variables}
    assert all(np.all(np.isfinite(v)) for v in mixed.values())

    reference = _model(mtl.weighting.get("gradvac", seed=1), "float32")
    reference.set_weights(before_step)
    reference.weighting.target_similarity.assign(ema)
    reference.compile(optimizer=keras.optimizers.SGD(0.05))
    reference.fit(_data(), epochs=1, steps_per_epoch=1, verbose=0)
    for name in ("label_logits", "mask_logits"):
        start = before_step[[i for i, v in enumerate(model.weights)
                             if v.path == f"{name}/kernel"][0]]
        step_mixed = np.asarray(model.get_layer(name).kernel) - start
        step_float = np.asarray(reference.get_layer(name).kernel) - start
        assert np.linalg.norm(step_float) > 0
        relative = np.linalg.norm(step_mixed - step_float) / np.linalg.norm(step_float)
        assert relative < 0.05, (name, relative)
