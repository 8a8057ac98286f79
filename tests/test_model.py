import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mtl as mtl
from keras_mtl.data import shapes

SIZE = 32


def tiny_model(weighting="equal", **kwargs):
    tasks = [mtl.tasks.Classification("label", 3), mtl.tasks.Segmentation("mask", 4)]
    return mtl.build_mtl(tasks, trunk="micro_resnet", weights=None, input_shape=(SIZE, SIZE, 3),
                         weighting=weighting, **kwargs)


def tiny_data(num=32, batch=8, tasks=("label", "mask"), seed=0):
    return shapes.make_dataset(num, image_size=SIZE, batch_size=batch, tasks=list(tasks),
                               seed=seed, cache=True)


def arrays(num=8):
    images, targets = next(iter(tiny_data(num, num)))
    return images.numpy(), {k: v.numpy() for k, v in targets.items()}


def test_fit_lowers_the_loss_and_logs_every_task():
    model = tiny_model("uncertainty")
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(tiny_data(64), epochs=6, verbose=0).history
    for key in ("loss", "label_loss", "mask_loss", "label_accuracy", "mask_miou",
                "weight/label", "weight/mask"):
        assert key in history, key
    assert history["loss"][-1] < 0.7 * history["loss"][0]
    assert history["mask_loss"][-1] < history["mask_loss"][0]


def test_jit_compiled_step_matches_the_plain_graph():
    data = tiny_data(16)
    results = []
    for jit in (False, True):
        keras.utils.set_random_seed(1)
        model = tiny_model("uncertainty")
        model.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=jit)
        history = model.fit(data, epochs=1, verbose=0).history
        results.append((history["loss"][0], model.get_layer("label_logits").kernel.numpy()))
    assert np.isfinite(results[1][0])
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-3)
    np.testing.assert_allclose(results[0][1], results[1][1], atol=1e-4)


@pytest.mark.parametrize("jit", [False, True])
def test_missing_task_gets_zero_gradient_and_untouched_weight(jit):
    model = tiny_model("uncertainty")
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit)
    mask_head = model.get_layer("mask_logits").kernel.numpy().copy()
    label_head = model.get_layer("label_logits").kernel.numpy().copy()
    history = model.fit(tiny_data(16, tasks=["label"]), epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
    np.testing.assert_array_equal(model.get_layer("mask_logits").kernel.numpy(), mask_head)
    assert not np.allclose(model.get_layer("label_logits").kernel.numpy(), label_head)
    log_variance = model.weighting.log_variance.numpy()
    assert log_variance[1] == 0.0 and log_variance[0] != 0.0


def test_all_unlabelled_batch_is_masked_not_nan():
    model = tiny_model("uncertainty")
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    images, targets = arrays(8)
    targets["label"][:] = -1
    head = model.get_layer("label_logits").kernel.numpy().copy()
    history = model.fit(images, targets, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
    np.testing.assert_array_equal(model.get_layer("label_logits").kernel.numpy(), head)
    assert model.weighting.log_variance.numpy()[0] == 0.0


def test_sample_weight_zero_drops_a_sample():
    model = tiny_model()
    model.compile(optimizer="sgd")
    images, targets = arrays(4)
    weights = {"label": np.array([1.0, 1.0, 0.0, 0.0], "float32")}
    outputs = model(images)
    losses, present = model.task_losses(targets, outputs, weights)
    expected, _ = model.tasks[0].compute_loss(targets["label"][:2], outputs["label"][:2])
    assert float(losses[0]) == pytest.approx(float(expected), rel=1e-5)
    np.testing.assert_array_equal(present, [1.0, 1.0])


def test_static_weights_are_applied_and_logged():
    model = tiny_model({"label": 2.0, "mask": 0.5})
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    history = model.fit(tiny_data(8, batch=8), epochs=1, verbose=0).history
    assert history["weight/label"][0] == 2.0 and history["weight/mask"][0] == 0.5
    expected = 2.0 * history["label_loss"][0] + 0.5 * history["mask_loss"][0]
    assert history["loss"][0] == pytest.approx(expected, rel=1e-4)


def test_keras_save_and_load_round_trip(tmp_path):
    model = tiny_model("uncertainty")
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(tiny_data(16), epochs=1, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored, mtl.MultiTaskModel)
    assert [t.name for t in restored.tasks] == ["label", "mask"]
    images, _ = arrays(4)
    for name in ("label", "mask"):
        np.testing.assert_allclose(restored(images)[name], model(images)[name], atol=1e-5)
    np.testing.assert_array_equal(restored.weighting.log_variance.numpy(),
                                  model.weighting.log_variance.numpy())
    assert np.any(model.weighting.log_variance.numpy() != 0.0)


def test_predict_returns_decoded_outputs():
    model = tiny_model()
    predictions = model.predict(arrays(3)[0], verbose=0)
    assert predictions["label"].shape == (3, 3)
    np.testing.assert_allclose(predictions["label"].sum(-1), 1.0, rtol=1e-5)
    assert predictions["mask"].shape == (3, SIZE, SIZE) and predictions["mask"].dtype == np.int32


def test_mixed_float16_keeps_weights_float32():
    keras.config.set_dtype_policy("mixed_float16")
    model = tiny_model("uncertainty")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(tiny_data(96, batch=8), epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
    assert model.weighting.log_variance.dtype == "float32"
    assert np.any(model.weighting.log_variance.numpy() != 0.0)  # updated once the scale settled
    assert model(arrays(2)[0])["mask"].dtype == "float32"


class TestBadInput:
    def test_unknown_task_key(self):
        model = tiny_model()
        model.compile(optimizer="sgd")
        images, targets = arrays(4)
        targets["bogus"] = targets["label"]
        with pytest.raises(ValueError, match=r"unknown task\(s\) \['bogus'\].*\['label', 'mask'\]"):
            model.fit(images, targets, verbose=0)
        data = tf.data.Dataset.from_tensors((images, targets))
        with pytest.raises(ValueError, match="bogus"):
            model.fit(data, verbose=0)

    def test_wrong_mask_shape(self):
        model = tiny_model()
        model.compile(optimizer="sgd")
        images, targets = arrays(4)
        targets["mask"] = targets["mask"][:, :16, :16]
        with pytest.raises(ValueError, match=r"Task 'mask'.*height and width"):
            model.fit(tf.data.Dataset.from_tensors((images, targets)), verbose=0)

    def test_class_id_out_of_range(self):
        model = tiny_model()
        model.compile(optimizer="sgd")
        images, targets = arrays(4)
        targets["label"][1] = 3
        message = r"Task 'label': class id out of range \[0, 3\) or -1; got min 1 max 3"
        with pytest.raises(ValueError, match=message):
            model.fit(tf.data.Dataset.from_tensors((images, targets)), verbose=0)
        with pytest.raises(tf.errors.InvalidArgumentError, match="Task 'label'"):
            model.evaluate(images, targets, verbose=0)

    def test_non_finite_pixels(self):
        model = tiny_model()
        model.compile(optimizer="sgd")
        images, targets = arrays(4)
        images = images.astype("float32")
        images[0, 0, 0, 0] = np.nan
        with pytest.raises(ValueError, match="Images contain NaN or infinite pixels"):
            model.fit(tf.data.Dataset.from_tensors((images, targets)), verbose=0)

    def test_bad_model_arguments(self):
        with pytest.raises(ValueError, match="multiples of 32"):
            mtl.build_mtl([mtl.tasks.Classification("c", 2)], trunk="micro_resnet",
                          weights=None, input_shape=(48, 40, 3))
        with pytest.raises(ValueError, match=r"distinct; repeated: \['c'\]"):
            mtl.build_mtl([mtl.tasks.Classification("c", 2)] * 2, trunk="micro_resnet",
                          weights=None, input_shape=(32, 32, 3))
        with pytest.raises(ValueError, match="unknown \\['x'\\], missing \\['mask'\\]"):
            tiny_model({"label": 1.0, "x": 1.0})
