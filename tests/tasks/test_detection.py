import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mtl
from keras_mtl.tasks import Detection
from keras_mtl.tasks.detection_decode import class_aware_nms
from keras_mtl.tasks.detection_targets import assign_targets


def _logits(grid, num_classes, peaks, half_size=4.0, stride=4):
    """Hand-made raw head output: background -10, `peaks` = [(row, col, class, score), ...];
    every cell predicts a square box of half side `half_size` pixels around its centre."""
    out = np.full((1, grid, grid, num_classes + 4), -10.0, "float32")
    raw = np.log(np.expm1(half_size / stride))  # softplus^-1
    out[..., num_classes:] = raw
    for row, col, cls, score in peaks:
        out[0, row, col, cls] = np.log(score / (1 - score))
    return out


# --- target assignment ----------------------------------------------------------------------
def test_assignment_on_a_hand_made_image():
    # A 32x32 image (8x8 grid at stride 4): one 16x8 box of class 1, one padded box.
    boxes = np.array([[[8.0, 8.0, 24.0, 16.0], [0.0, 0.0, 0.0, 0.0]]])
    labels = np.array([[1, -1]])
    targets = assign_targets(boxes, labels, num_classes=2, grid_shape=(8, 8), stride=4)
    heatmap = targets["heatmap"].numpy().reshape(8, 8, 2)
    # Centre (16, 12) px -> cell (row 3, col 4): the single positive, on class 1 only.
    assert heatmap[3, 4, 1] == 1.0
    assert np.sum(heatmap >= 1.0) == 1
    assert heatmap[..., 0].max() == 0.0  # the padded box draws nothing
    # The Gaussian falls off from the centre, faster vertically (the box is flatter).
    assert 0.0 < heatmap[3, 3, 1] < 1.0 and heatmap[3, 3, 1] == pytest.approx(heatmap[3, 5, 1])
    assert heatmap[2, 4, 1] < heatmap[3, 3, 1]
    assert heatmap[0, 0, 1] == pytest.approx(0.0, abs=1e-6)
    # Regression: cells in the central part of the box regress it; weights sum to 1.
    weights = targets["box_weights"].numpy().reshape(8, 8)
    assert weights.sum() == pytest.approx(1.0, rel=1e-5)
    assert weights[3, 4] == weights.max()
    assert set(zip(*np.nonzero(weights > 1e-3))) <= {(2, 3), (2, 4), (3, 3), (3, 4)}
    np.testing.assert_allclose(targets["box_targets"].numpy()[0, 3 * 8 + 4], [8, 8, 24, 16])
    np.testing.assert_array_equal(targets["num_objects"].numpy(), [1.0])


def test_assignment_smallest_box_wins_shared_cells_and_images_are_independent():
    big, small = [0.0, 0.0, 32.0, 32.0], [12.0, 12.0, 20.0, 20.0]  # same centre (16, 16)
    boxes = np.array([[big, small], [small, [0.0] * 4]])
    labels = np.array([[0, 2], [1, -1]])
    targets = assign_targets(boxes, labels, num_classes=3, grid_shape=(8, 8), stride=4)
    centre = 4 * 8 + 4
    np.testing.assert_allclose(targets["box_targets"].numpy()[0, centre], small)
    heatmap = targets["heatmap"].numpy()
    assert heatmap[0, centre, 0] == 1.0 and heatmap[0, centre, 2] == 1.0
    assert heatmap[1, centre, 1] == 1.0 and heatmap[1, :, [0, 2]].max() == 0.0
    np.testing.assert_array_equal(targets["num_objects"].numpy(), [2.0, 1.0])


# --- loss -----------------------------------------------------------------------------------
def test_loss_finite_with_no_boxes_and_teaches_background():
    task = Detection("objects", num_classes=3)
    y_true = {"boxes": np.zeros((2, 4, 4), "float32"), "labels": np.full((2, 4), -1, "int32")}
    logits = tf.Variable(np.random.default_rng(0).normal(size=(2, 8, 8, 7)).astype("float32"))
    with tf.GradientTape() as tape:
        loss, count = task.compute_loss(y_true, logits)
    gradient = tape.gradient(loss, logits).numpy()
    assert np.isfinite(float(loss)) and float(loss) > 0.0
    assert float(count) == 2.0  # images without boxes are labelled: all background
    assert np.all(np.isfinite(gradient))
    assert np.any(gradient[..., :3] != 0) and np.all(gradient[..., 3:] == 0)  # no box to regress


def test_loss_masks_zero_weight_samples_and_is_finite_for_perfect_boxes():
    task = Detection("objects", num_classes=2)
    y_true = {"boxes": np.array([[[8.0, 8.0, 16.0, 16.0]], [[4.0, 4.0, 28.0, 20.0]]], "float32"),
              "labels": np.array([[0], [1]], "int32")}
    # Cell (3, 3) has centre (14, 14); a box (8, 8, 16, 16) is 6, 6, 2, 2 px away.
    raw = np.full((2, 8, 8, 6), -5.0, "float32")
    raw[0, 3, 3, 2:] = np.log(np.expm1(np.array([6.0, 6.0, 2.0, 2.0]) / 4))
    logits = tf.Variable(raw)
    with tf.GradientTape() as tape:
        loss, count = task.compute_loss(y_true, logits, sample_weight=np.array([1.0, 0.0]))
    gradient = tape.gradient(loss, logits).numpy()
    assert float(count) == 1.0
    assert np.all(np.isfinite(gradient)) and np.isfinite(float(loss))
    np.testing.assert_array_equal(gradient[1], 0.0)  # the weight-0 image adds nothing
    with tf.GradientTape() as tape:
        loss, count = task.compute_loss(y_true, logits, sample_weight=np.zeros(2))
    assert float(loss) == 0.0 and float(count) == 0.0
    np.testing.assert_array_equal(tape.gradient(loss, logits).numpy(), 0.0)


def test_loss_decreases_toward_the_right_box():
    task = Detection("objects", num_classes=1, box_loss_weight=1.0)
    y_true = {"boxes": np.array([[[8.0, 8.0, 16.0, 16.0]]]), "labels": np.array([[0]])}
    good = np.full((1, 8, 8, 5), -5.0, "float32")
    good[0, 3, 3, 0] = 5.0
    good[0, 3, 3, 1:] = np.log(np.expm1(np.array([6.0, 6.0, 2.0, 2.0]) / 4))
    bad = good.copy()
    bad[0, 3, 3, 1:] = 2.0
    assert float(task.compute_loss(y_true, good)[0]) < float(task.compute_loss(y_true, bad)[0])


def test_relative_box_format_gives_the_same_loss():
    boxes = np.array([[[8.0, 4.0, 24.0, 20.0]]], "float32")
    labels = np.array([[2]], "int32")
    logits = np.random.default_rng(1).normal(size=(1, 8, 8, 7)).astype("float32")
    xyxy = Detection("o", 3).compute_loss({"boxes": boxes, "labels": labels}, logits)[0]
    rel = Detection("o", 3, bounding_box_format="rel_yxyx").compute_loss(
        {"boxes": boxes[..., [1, 0, 3, 2]] / 32.0, "labels": labels}, logits)[0]
    assert float(rel) == pytest.approx(float(xyxy), rel=1e-5)


# --- decoding -------------------------------------------------------------------------------
def test_decode_nms_is_class_aware_and_thresholded():
    task = Detection("objects", num_classes=2, max_detections=5, score_threshold=0.2,
                     iou_threshold=0.5)
    # Two overlapping class-0 peaks two cells apart (IoU 0.6: the weaker is suppressed), a
    # class-1 peak on the same spot (kept: NMS is per class), a far class-0 peak and a peak
    # under the score threshold. A 64x64 image: a 16x16 grid at stride 4.
    logits = _logits(16, 2, [(5, 5, 0, 0.9), (5, 7, 0, 0.8), (5, 5, 1, 0.7), (13, 13, 0, 0.6),
                             (0, 15, 1, 0.1)], half_size=16.0)
    out = {k: v.numpy() for k, v in task.decode(logits).items()}
    assert out["objects_num_detections"].tolist() == [3]
    np.testing.assert_allclose(out["objects_scores"][0], [0.9, 0.7, 0.6, 0, 0], rtol=1e-5)
    np.testing.assert_array_equal(out["objects_labels"][0], [0, 1, 0, -1, -1])
    # Boxes around cell centres, clipped to the image, in input pixels.
    np.testing.assert_allclose(out["objects_boxes"][0, :3],
                               [[6, 6, 38, 38], [6, 6, 38, 38], [38, 38, 64, 64]], atol=1e-4)
    np.testing.assert_array_equal(out["objects_boxes"][0, 3:], 0.0)
    # With a higher IoU threshold the second class-0 box survives.
    loose = Detection("objects", num_classes=2, max_detections=5, score_threshold=0.2,
                      iou_threshold=0.7)
    assert loose.decode(logits)["objects_num_detections"].numpy().tolist() == [4]


def test_decode_in_other_box_formats():
    logits = _logits(8, 1, [(1, 2, 0, 0.9)], half_size=2.0)  # centre (10, 6): box (8, 4, 12, 8)
    for fmt, expected in [("xyxy", [8, 4, 12, 8]), ("yxyx", [4, 8, 8, 12]),
                          ("xywh", [8, 4, 4, 4]), ("center_xywh", [10, 6, 4, 4]),
                          ("rel_xyxy", [0.25, 0.125, 0.375, 0.25])]:
        task = Detection("d", num_classes=1, bounding_box_format=fmt, max_detections=3)
        out = task.decode(logits)
        np.testing.assert_allclose(out["d_boxes"][0, 0], expected, atol=1e-4, err_msg=fmt)
        np.testing.assert_array_equal(out["d_boxes"][0, 1:], 0.0)


def test_cluster_nms_equals_greedy_nms():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 40, (3, 50, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 25, (3, 50, 2))], -1).astype("float32")
    scores = -np.sort(-rng.uniform(0, 1, (3, 50)), axis=1).astype("float32")
    classes = rng.integers(0, 2, (3, 50)).astype("int32")
    keep = class_aware_nms(boxes, scores, classes, 0.5, 0.1).numpy()
    for b in range(3):
        expected = np.zeros(50, bool)
        for c in range(2):
            index = np.nonzero((classes[b] == c) & (scores[b] >= 0.1))[0]
            chosen = tf.image.non_max_suppression(
                boxes[b, index][:, [1, 0, 3, 2]], scores[b, index], 50, 0.5).numpy()
            expected[index[chosen]] = True
        np.testing.assert_array_equal(keep[b], expected)


def test_decode_compiles_with_xla_and_unknown_batch():
    task = Detection("objects", num_classes=2, max_detections=4)
    logits = _logits(8, 2, [(3, 3, 0, 0.9), (5, 1, 1, 0.8)])
    eager = task.decode(logits)
    xla = tf.function(task.decode, jit_compile=True)(logits)
    dynamic = tf.function(task.decode, input_signature=[tf.TensorSpec((None, 8, 8, 6))])
    for name in eager:
        np.testing.assert_allclose(xla[name], eager[name], atol=1e-5)
        np.testing.assert_allclose(dynamic(np.concatenate([logits] * 3))[name][2], eager[name][0],
                                   atol=1e-5)


# --- metrics and checks ---------------------------------------------------------------------
def test_recall_and_precision_metrics():
    task = Detection("objects", num_classes=2, metric_score_threshold=0.5)
    logits = _logits(8, 2, [(3, 3, 0, 0.9), (6, 6, 1, 0.8)], half_size=4.0)
    # Ground truth: the first detection's box exactly, and a box nobody found.
    y_true = {"boxes": np.array([[[10.0, 10.0, 18.0, 18.0], [0.0, 20.0, 6.0, 30.0]]]),
              "labels": np.array([[0, 1]])}
    recall, precision = task.build_metrics()
    task.update_metrics([recall, precision], y_true, logits)
    assert float(recall.result()) == pytest.approx(0.5)
    assert float(precision.result()) == pytest.approx(0.5)
    assert recall.name == "objects_recall50"


def test_check_targets_errors_name_the_task_and_format():
    task = Detection("cars", num_classes=2)
    good = {"boxes": np.array([[[1.0, 2.0, 5.0, 6.0], [0, 0, 0, 0]]], "float32"),
            "labels": np.array([[1, -1]], "int32")}
    checked = task.check_targets(good, (32, 32, 3))
    np.testing.assert_array_equal(checked["labels"], good["labels"])
    with pytest.raises(ValueError, match=r"Task 'cars'.*dict"):
        task.check_targets(good["boxes"], (32, 32, 3))
    with pytest.raises(ValueError, match=r"Task 'cars'.*same B and N"):
        task.check_targets({"boxes": good["boxes"], "labels": np.zeros((1, 3), "int32")},
                           (32, 32, 3))
    with pytest.raises(ValueError, match=r"Task 'cars'.*labels must be integer"):
        task.check_targets({"boxes": good["boxes"], "labels": good["labels"] * 1.0}, (32, 32, 3))
    with pytest.raises(ValueError, match=r"Task 'cars'.*\(B, N, 4\)"):
        task.check_targets({"boxes": good["boxes"][..., :3], "labels": good["labels"]},
                           (32, 32, 3))
    with pytest.raises(tf.errors.InvalidArgumentError, match="Task 'cars': box label out of range"):
        task.check_targets({"boxes": good["boxes"], "labels": np.array([[2, -1]])}, (32, 32, 3))
    with pytest.raises(tf.errors.InvalidArgumentError, match="Task 'cars': boxes contain NaN"):
        task.check_targets({"boxes": good["boxes"] * np.nan, "labels": good["labels"]},
                           (32, 32, 3))
    # A valid xyxy box read as yxyx is fine here, but x_max < x_min is not...
    swapped = {"boxes": np.array([[[5.0, 2.0, 1.0, 6.0]]], "float32"), "labels": np.array([[0]])}
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="Task 'cars': boxes are not valid 'xyxy' boxes"):
        task.check_targets(swapped, (32, 32, 3))
    # ... and a padded box (label -1) is not checked.
    task.check_targets({"boxes": swapped["boxes"], "labels": np.array([[-1]])}, (32, 32, 3))
    xywh = Detection("cars", num_classes=2, bounding_box_format="xywh")
    with pytest.raises(tf.errors.InvalidArgumentError, match="not valid 'xywh' boxes"):
        xywh.check_targets({"boxes": np.array([[[5.0, 2.0, -1.0, 6.0]]], "float32"),
                            "labels": np.array([[0]])}, (32, 32, 3))


def test_constructor_errors_and_config_round_trip():
    with pytest.raises(ValueError, match="Task 'd'.*bounding_box_format"):
        Detection("d", 2, bounding_box_format="corners")
    with pytest.raises(ValueError, match="Task 'd'.*feature_level"):
        Detection("d", 2, feature_level="P6")
    task = Detection("d", 4, bounding_box_format="rel_xywh", feature_level="P3", max_detections=7)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(task))
    assert clone.get_config() == task.get_config() and clone.stride == 8


# --- XLA and in a model ----------------------------------------------------------------------
def test_loss_gradient_and_metrics_compile_with_xla():
    task = Detection("objects", num_classes=3)
    y_true = {"boxes": np.array([[[4.0, 4.0, 20.0, 12.0], [0, 0, 0, 0]],
                                 [[0, 0, 0, 0], [0, 0, 0, 0]]], "float32"),
              "labels": np.array([[2, -1], [-1, -1]], "int32")}
    logits = np.random.default_rng(0).normal(size=(2, 8, 8, 7)).astype("float32")
    weight = np.array([1.0, 1.0], "float32")
    metrics = task.build_metrics()

    def step(y_true, logits, weight):
        logits = tf.convert_to_tensor(logits)
        with tf.GradientTape() as tape:
            tape.watch(logits)
            loss, count = task.compute_loss(y_true, logits, weight)
        task.update_metrics(metrics, y_true, logits, weight)
        return loss, count, tape.gradient(loss, logits)

    eager = step(y_true, logits, weight)
    xla = tf.function(step, jit_compile=True)(y_true, logits, weight)
    for a, b in zip(eager, xla):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert np.all(np.isfinite(xla[2]))


def test_in_a_model_trains_predicts_and_exports(tmp_path, conv_trunk):
    from keras_mtl.data import shapes

    model = keras_mtl.build_mtl(
        [Detection("objects", num_classes=3, feature_level="P3", max_detections=10)],
        trunk=conv_trunk(), weights=None, input_shape=(32, 32, 3))
    assert tuple(model.output["objects"].shape) == (None, 4, 4, 7)
    model.compile(optimizer=keras.optimizers.SGD(0.01))  # Adam traces slower; not tested here
    data = shapes.make_dataset(8, image_size=32, batch_size=4, tasks=["objects"])
    history = model.fit(data, epochs=1, verbose=0).history
    assert np.isfinite(history["objects_loss"][-1]) and "objects_recall50" in history
    predicted = model.predict(data, verbose=0)
    assert predicted["objects_boxes"].shape == (8, 10, 4)
    assert predicted["objects_labels"].dtype == np.int32
    model.export(str(tmp_path / "saved"), verbose=False)  # keras_mtl.export: decoded outputs
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    images = next(iter(data))[0]
    reloaded = loaded.signatures["serving_default"](images=tf.cast(images, tf.float32))
    for name in ("objects_boxes", "objects_scores", "objects_labels", "objects_num_detections"):
        np.testing.assert_allclose(reloaded[name], predicted[name][:4], atol=1e-4)


@pytest.mark.slow
def test_three_task_model_trains_and_predicts_with_xla():
    from keras_mtl.data import shapes

    model = keras_mtl.build_mtl(
        [keras_mtl.tasks.Classification("label", 3), Detection("objects", num_classes=3),
         keras_mtl.tasks.Segmentation("mask", 4)],
        trunk="micro_resnet", weights=None, input_shape=(32, 32, 3), weighting="uncertainty")
    model.compile(optimizer="adam", jit_compile=True)
    data = shapes.make_dataset(8, image_size=32, batch_size=4)
    history = model.fit(data, epochs=2, verbose=0).history
    assert all(np.isfinite(v[-1]) for v in history.values())
    predicted = model.predict(data, verbose=0)  # XLA-compiled predict, NMS included
    assert predicted["objects_num_detections"].shape == (8,)
