import math

import numpy as np
import pytest

pytest.importorskip("pycocotools")

import keras_mtl  # noqa: E402
from keras_mtl.evaluation import DetectionMAPCallback, coco_map, evaluate_detection  # noqa: E402
from keras_mtl.tasks import Detection  # noqa: E402

# AP at one IoU threshold when half the ground truth is found, first: COCO interpolates
# precision at 101 recall points 0, .01, ..., 1; precision is 1 up to recall .5 (51 points)
# and 0 beyond, so AP = 51 / 101.
HALF_FOUND_AP = 51 / 101


def _ground_truth():
    return {
        "boxes": np.array([[[10, 10, 30, 30], [40, 40, 60, 50], [0, 0, 0, 0]],
                           [[5, 5, 25, 45], [0, 0, 0, 0], [0, 0, 0, 0]],
                           [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]], "float32"),
        "labels": np.array([[0, 1, -1], [1, -1, -1], [-1, -1, -1]], "int32"),
    }


def test_ground_truth_fed_back_scores_one():
    gt = _ground_truth()
    predictions = {"boxes": gt["boxes"], "labels": gt["labels"],
                   "scores": np.where(gt["labels"] >= 0, 0.9, 0.0)}
    result = coco_map(gt, predictions, num_classes=2)
    assert result["map"] == pytest.approx(1.0)
    assert result["map50"] == pytest.approx(1.0)
    assert result["map75"] == pytest.approx(1.0)
    assert result["mar_100"] == pytest.approx(1.0)
    assert result["num_ground_truth"] == 3 and result["num_images"] == 3
    assert math.isnan(result["map_large"])  # no ground truth of that size: undefined


def test_hand_worked_case():
    # One image, two class-0 boxes; an exact detection, then a lower-scored false
    # positive: precision 1 up to recall 0.5, never more recall.
    gt = [{"boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30]], "float32"),
           "labels": np.array([0, 0])}]
    predictions = [{"boxes": np.array([[0, 0, 10, 10], [50, 50, 60, 60]], "float32"),
                    "scores": np.array([0.9, 0.8]), "labels": np.array([0, 0])}]
    result = coco_map(gt, predictions, image_shape=(64, 64))
    assert result["map50"] == pytest.approx(HALF_FOUND_AP)
    assert result["map"] == pytest.approx(HALF_FOUND_AP)
    # The false positive scored first: precision 1/2 at recall 1/2 -> AP = 51 * 0.5 / 101.
    predictions[0]["scores"] = np.array([0.7, 0.8])
    assert coco_map(gt, predictions)["map50"] == pytest.approx(0.5 * HALF_FOUND_AP)


def test_partial_overlap_counts_only_at_low_iou_thresholds():
    # A 10x10 box shifted by 2 px: IoU 80 / 120 = 0.667, a match at .50 .55 .60 .65 only.
    gt = [{"boxes": np.array([[0, 0, 10, 10]], "float32"), "labels": np.array([3])}]
    predictions = [{"boxes": np.array([[2, 0, 12, 10]], "float32"), "scores": np.array([0.5]),
                    "labels": np.array([3])}]
    result = coco_map(gt, predictions)
    assert result["map50"] == pytest.approx(1.0)
    assert result["map75"] == pytest.approx(0.0)
    assert result["map"] == pytest.approx(0.4)  # 4 of 10 thresholds
    assert list(result["ap_per_class"]) == ["3"]


def test_wrong_class_no_predictions_and_no_ground_truth():
    gt = [{"boxes": np.array([[0, 0, 10, 10]], "float32"), "labels": np.array([0])}]
    wrong = [{"boxes": gt[0]["boxes"], "scores": np.array([0.9]), "labels": np.array([1])}]
    assert coco_map(gt, wrong, num_classes=2)["map50"] == 0.0
    empty = [{"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, int)}]
    result = coco_map(gt, empty, num_classes=2)
    assert result["map"] == 0.0 and result["num_detections"] == 0
    assert math.isnan(result["ap_per_class"]["1"])  # class 1 has no ground truth
    nothing = [{"boxes": np.zeros((1, 4)), "labels": np.array([-1])}]
    assert math.isnan(coco_map(nothing, wrong)["map"])


def test_formats_num_detections_and_task_prefixed_keys():
    gt = {"boxes": np.array([[[0.0, 0.0, 0.5, 0.25]]]), "labels": np.array([[0]])}  # rel_yxyx
    predictions = {  # the second detection lies beyond num_detections: ignored
        "objects_boxes": np.array([[[0.0, 0.0, 0.5, 0.25], [0.5, 0.5, 1.0, 1.0]]]),
        "objects_scores": np.array([[0.5, 0.9]]), "objects_labels": np.array([[0, 0]]),
        "objects_num_detections": np.array([1]),
    }
    result = coco_map(gt, predictions, bounding_box_format="rel_yxyx", image_shape=(32, 64, 3))
    assert result["map"] == pytest.approx(1.0) and result["num_detections"] == 1
    with pytest.raises(ValueError, match="image_shape"):
        coco_map(gt, predictions, bounding_box_format="rel_yxyx")
    with pytest.raises(ValueError, match="2 images"):
        coco_map([gt, gt], predictions)


def test_evaluate_detection_and_callback_on_a_tiny_model():
    from keras_mtl.data import shapes

    model = keras_mtl.build_mtl(
        [keras_mtl.tasks.Classification("label", 3), Detection("objects", num_classes=3)],
        trunk="micro_resnet", weights=None, input_shape=(32, 32, 3))
    val = shapes.make_dataset(8, image_size=32, batch_size=4, seed=1, tasks=["label", "objects"])
    result = evaluate_detection(model, val)
    assert result["num_images"] == 8 and 0.0 <= result["map"] <= 1.0
    # Images whose sample weight is 0 and batches without the task are left out.
    weighted = val.map(lambda x, y: (x, y, {"objects": [1.0, 0.0, 1.0, 0.0]}))
    assert evaluate_detection(model, weighted, "objects")["num_images"] == 4
    labels_only = shapes.make_dataset(4, image_size=32, batch_size=4, tasks=["label"])
    assert evaluate_detection(model, labels_only)["num_images"] == 0
    with pytest.raises(ValueError, match="not a detection task"):
        evaluate_detection(model, val, "label")
    callback, logs = DetectionMAPCallback(val, frequency=2), {}
    callback.set_model(model)
    callback.set_params({"epochs": 3})
    callback.on_epoch_end(0, logs)  # not an evaluation epoch
    assert logs == {}
    callback.on_epoch_end(2, logs)  # the last epoch always is
    assert set(logs) == {"val_objects_map", "val_objects_map50"}
