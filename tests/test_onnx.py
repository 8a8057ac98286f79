"""ONNX export of the decoded outputs and `check_export`'s per-head parity table:
SavedModel, float32 TFLite and ONNX (onnxruntime) against `predict` within the stated
tolerances (probabilities and class maps 1e-5, boxes 1e-3 px, identical counts)."""

import numpy as np
import pytest

import keras_mtl as mtl
from keras_mtl.data import shapes
from keras_mtl.export_check import TOLERANCES, check_export, difference
from keras_mtl.onnx import run_onnx
from keras_mtl.tflite import export_tflite

OUTPUTS = {"label", "objects_boxes", "objects_scores", "objects_labels",
           "objects_num_detections", "mask", "mask_probs"}


def _tasks():
    return [mtl.tasks.Classification("label", 3), mtl.tasks.Detection("objects", 3),
            mtl.tasks.Segmentation("mask", 4, output_probs=True)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A 3-task model trained a little, exported to the three formats."""
    folder = tmp_path_factory.mktemp("onnx")
    model = mtl.build_mtl(_tasks(), trunk="micro_resnet", weights=None, input_shape=(32, 32, 3))
    model.compile(optimizer="adam")
    data = shapes.make_dataset(16, image_size=32, batch_size=8, seed=1, cache=True)
    model.fit(data, epochs=1, verbose=0)  # trained a little: detections are not all ties
    paths = {"saved": str(folder / "saved"), "tflite": str(folder / "model.tflite"),
             "onnx": str(folder / "model.onnx")}
    model.export(paths["saved"], verbose=False)
    export_tflite(paths["saved"], paths["tflite"], select_tf_ops=False)  # builtin ops
    assert model.export(paths["onnx"], format="onnx", verbose=False) == paths["onnx"]
    return model, paths, next(iter(data))[0].numpy()


def test_onnx_serves_the_decoded_outputs_for_any_batch_size(exported):
    model, paths, images = exported
    for batch in (images[:1], images):
        outputs = run_onnx(paths["onnx"], batch)
        assert set(outputs) == OUTPUTS  # decoded, not the raw heads
        assert outputs["objects_boxes"].shape == (len(batch), 100, 4)
        assert outputs["mask"].shape == (len(batch), 32, 32)
        assert outputs["mask"].dtype == np.int32
        assert outputs["objects_num_detections"].dtype == np.int32


def test_parity_table_of_savedmodel_tflite_and_onnx(exported, capsys):
    model, paths, images = exported
    report = check_export(model, [paths["saved"], paths["tflite"], paths["onnx"]], images,
                          verbose=True)  # raises beyond the tolerances
    assert list(report.by_export) == ["SavedModel", "TFLite", "ONNX"]
    assert set(report) == OUTPUTS
    assert report.kinds["mask"] == "class_map" and report.kinds["label"] == "probabilities"
    assert report.kinds["objects_boxes"] == "boxes"
    for values in report.by_export.values():
        assert values["objects_num_detections"] == 0.0
        assert values["objects_labels"] == 0.0
        assert values["mask"] <= TOLERANCES["class_map"]
        assert values["label"] <= 1e-5 and values["mask_probs"] <= 1e-5
        assert values["objects_scores"] <= 1e-5
        assert values["objects_boxes"] <= 1e-3
    assert report.failures() == []
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[-3:] == ["SavedModel", "TFLite", "ONNX"]
    assert "share of pixels differing" in table and "objects_num_detections" in table


def test_an_export_of_other_weights_fails_the_check(exported):
    model, paths, images = exported
    untrained = mtl.build_mtl(_tasks(), trunk="micro_resnet", weights=None,
                              input_shape=(32, 32, 3))
    with pytest.raises(AssertionError, match="SavedModel 'label'"):
        check_export(untrained, paths["saved"], images)
    report = check_export(untrained, paths["saved"], images, raise_on_failure=False)
    assert report["label"] > 1e-5
    assert ("SavedModel", "label", report["label"], 1e-5) in report.failures()


def test_measures_and_errors():
    counts = np.array([[True, True, False]])
    assert difference("labels", np.array([[1, 2, -1]]), np.array([[1, 0, 2]]), counts) == 0.5
    assert difference("scores", np.array([[0.9, 0.5, 0.0]]), np.array([[0.9, 0.5, 0.7]]),
                      counts) == 0.0  # padding is not compared
    assert difference("num_detections", np.array([2, 3]), np.array([2, 4])) == 0.5
    assert difference("boxes", np.zeros((1, 0, 4)), np.zeros((1, 0, 4))) == 0.0
    with pytest.raises(ValueError, match="Cannot tell the format"):
        check_export(None, "model.pb", np.zeros((1, 32, 32, 3)))
