"""TFLite export: float32 matches the SavedModel to 1e-4 (classification, detection with
NMS, segmentation), int8 calibrated on the pipeline is a fraction of the float size."""

import os

import numpy as np
import pytest
import tensorflow as tf

import keras_mtl as mtl
from keras_mtl.data import shapes
from keras_mtl.tflite import check_tflite, export_tflite, run_tflite


def _model(trunk="micro_resnet"):
    tasks = [mtl.tasks.Classification("label", 3), mtl.tasks.Detection("objects", 3),
             mtl.tasks.Segmentation("mask", 4)]
    model = mtl.build_mtl(tasks, trunk=trunk, weights=None, input_shape=(32, 32, 3))
    model.compile(optimizer="adam")
    return model


def _data():
    return shapes.make_dataset(16, image_size=32, batch_size=8, seed=1, cache=True)


def _trained_and_exported(tmp_path):
    model = _model()
    data = _data()
    model.fit(data, epochs=1, verbose=0)  # trained a little: detections are not all ties
    saved = str(tmp_path / "saved")
    model.export(saved, verbose=False)
    return model, data, saved, next(iter(data))[0].numpy()


def test_float32_tflite_against_the_savedmodel(tmp_path, capsys):
    model, _, saved, images = _trained_and_exported(tmp_path)
    path = export_tflite(model, str(tmp_path / "float.tflite"))
    report = check_tflite(path, saved, images, atol=1e-4)  # raises beyond 1e-4
    assert set(report["max_abs_diff"]) == {
        "label", "objects_boxes", "objects_scores", "objects_labels", "objects_num_detections",
        "mask"}
    assert report["agreement"]["mask"] == 1.0
    assert report["agreement"]["objects_num_detections"] == 1.0
    printed = capsys.readouterr().out
    assert "KiB" in printed and "max abs difference" in printed


@pytest.mark.slow
def test_int8_tflite_calibrated_on_the_pipeline(tmp_path):
    model, data, saved, images = _trained_and_exported(tmp_path)
    float32 = export_tflite(model, str(tmp_path / "float.tflite"))
    int8 = export_tflite(model, str(tmp_path / "int8.tflite"), quantization="int8",
                         representative_data=data, num_calibration_images=16)
    quantized = check_tflite(int8, saved, images, atol=None, verbose=False)
    assert os.path.getsize(int8) <= 0.4 * os.path.getsize(float32)  # 0.27x with tiny_resnet
    assert quantized["max_abs_diff"]["label"] < 0.05  # probabilities
    assert quantized["agreement"]["mask"] > 0.8


def test_bad_arguments(tmp_path):
    model = _model()
    with pytest.raises(ValueError, match="Unknown quantization"):
        export_tflite(model, str(tmp_path / "m.tflite"), quantization="float16")
    with pytest.raises(ValueError, match="representative_data"):
        export_tflite(model, str(tmp_path / "m.tflite"), quantization="int8")
    with pytest.raises(ValueError, match="No SavedModel"):
        export_tflite(str(tmp_path / "missing"), str(tmp_path / "m.tflite"))


@pytest.mark.slow
def test_tiny_resnet_int8_is_at_most_0_3_of_float_and_savedmodel_source(tmp_path):
    model = _model("tiny_resnet")
    data = _data()
    saved = str(tmp_path / "saved")
    model.export(saved, verbose=False)
    images = next(iter(data))[0].numpy()
    sizes = {}
    for quantization in (None, "dynamic", "int8"):
        path = export_tflite(model, str(tmp_path / f"{quantization}.tflite"),
                             quantization=quantization, representative_data=data)
        report = check_tflite(path, saved, images, atol=1e-4 if quantization is None else None)
        sizes[quantization] = report["size_bytes"]
    assert sizes["int8"] <= 0.3 * sizes[None], sizes
    assert sizes["dynamic"] <= 0.3 * sizes[None], sizes
    # Its SavedModel converts with builtin ops only, to the same outputs.
    path = export_tflite(saved, str(tmp_path / "from_saved.tflite"), select_tf_ops=False)
    check_tflite(path, saved, images, atol=1e-4)


def _saved_model_without_builtin(path):
    """A SavedModel whose serving function uses `BitwiseAnd`, which TFLite has no builtin for."""
    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec((1, 32, 32, 3), tf.float32, name="images")])
    def serve(images):
        bits = tf.bitwise.bitwise_and(tf.cast(images, tf.int32), 7)
        return {"low_bits": tf.cast(bits, tf.float32)}

    module.serve = serve
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    return str(path)


def test_an_op_without_builtin_falls_back_to_select_ops_with_a_warning(tmp_path):
    saved = _saved_model_without_builtin(tmp_path / "bitwise")
    with pytest.raises(ValueError, match="select_tf_ops=True"):
        export_tflite(saved, str(tmp_path / "builtins.tflite"), select_tf_ops=False)
    with pytest.warns(UserWarning, match="TF Select"):
        path = export_tflite(saved, str(tmp_path / "flex.tflite"))
    images = np.full((1, 32, 32, 3), 13.0, np.float32)
    try:  # where the interpreter has no Flex delegate, running it says what to do instead
        outputs = run_tflite(path, images)
        np.testing.assert_array_equal(outputs["low_bits"], np.full((1, 32, 32, 3), 5.0))
    except RuntimeError as error:
        assert "Flex" in str(error), error
