"""keras_mtl.plotting: every plot writes a PNG, one drawing convention, no global backend."""

import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")

from matplotlib.image import imread  # noqa: E402

from keras_mtl import plotting  # noqa: E402
from keras_mtl.data import shapes  # noqa: E402
from keras_mtl.plotting import save_prediction_png  # noqa: E402
from keras_mtl.plotting.drawing import IGNORE_COLOUR, class_colour  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"

HISTORY = {
    "loss": [3.0, 2.0, 1.5], "val_loss": [3.2, 2.4, 2.0],
    "label_loss": [1.0, 0.7, 0.5], "val_label_loss": [1.1, 0.8, 0.7],
    "label_accuracy": [0.4, 0.6, 0.8], "val_label_accuracy": [0.3, 0.5, 0.7],
    "mask_loss": [2.0, 1.3, 1.0], "mask_miou": [0.2, 0.4, 0.5], "mask_accuracy": [0.5, 0.7, 0.8],
    "weight/label": [1.0, 0.9, 0.8], "weight/mask": [1.0, 1.1, 1.2],
}


def _is_png(path):
    with open(path, "rb") as file:
        return file.read(8) == PNG


def test_plot_history_still_works_as_the_shapes_recipe_calls_it(tmp_path):
    path = plotting.plot_history(HISTORY, str(tmp_path / "curves.png"), task_names=["label"])
    assert _is_png(path)
    assert _is_png(plotting.plot_history(HISTORY, str(tmp_path / "all.png")))


def test_task_curves_and_weights(tmp_path):
    assert _is_png(plotting.plot_task_curves(HISTORY, str(tmp_path / "tasks.png")))
    assert _is_png(plotting.plot_weights(HISTORY, str(tmp_path / "weights.png")))
    with pytest.raises(ValueError, match="weight/"):
        plotting.plot_weights({"loss": [1.0]}, str(tmp_path / "none.png"))
    with pytest.raises(ValueError, match="_loss"):
        plotting.plot_task_curves({"loss": [1.0]}, str(tmp_path / "none.png"))


def test_comparison_and_efficiency_bar_charts(tmp_path):
    comparison = {
        "multi_task": {"metrics": {"label": {"accuracy": 0.9}, "mask": {"miou": 0.6}},
                       "params": 150, "train_seconds": 10.0},
        "single_task": {"label": {"metrics": {"label": {"accuracy": 0.8}}, "params": 100,
                                  "train_seconds": 8.0},
                        "mask": {"metrics": {"mask": {"miou": 0.65}}, "params": 110,
                                 "train_seconds": 9.0}},
        "delta_m": 2.4, "efficiency": {"ratio": {"flops": 0.6, "images_per_second": 1.7}},
    }
    assert _is_png(plotting.plot_comparison(comparison, str(tmp_path / "comparison.png")))
    report = {"multi_task": {"params": 150, "flops": 1e6, "images_per_second": 30.0},
              "single_task": {"label": {"params": 100, "flops": 6e5, "images_per_second": 40.0},
                              "mask": {"params": 110, "flops": 7e5, "images_per_second": 35.0}},
              "single_task_sum": {"params": 210, "flops": 1.3e6, "images_per_second": 18.7}}
    assert _is_png(plotting.plot_efficiency(report, str(tmp_path / "efficiency.png")))


def test_prediction_gallery_draws_boxes_and_masks(tmp_path):
    images, targets = next(iter(shapes.make_dataset(6, image_size=32, batch_size=6)))
    images = images.numpy()
    blank = plotting.plot_prediction_gallery(images, str(tmp_path / "blank.png"), columns=3)
    predictions = {
        "objects_boxes": targets["objects"]["boxes"].numpy(),
        "objects_scores": np.where(targets["objects"]["labels"].numpy() >= 0, 0.9, 0.0),
        "objects_labels": targets["objects"]["labels"].numpy(),
        "mask": targets["mask"].numpy(),
        "label": np.eye(3)[targets["label"].numpy()],
    }
    drawn = plotting.plot_prediction_gallery(
        images, str(tmp_path / "gallery.png"), predictions=predictions, detection="objects",
        segmentation="mask", classification="label",
        class_names={"objects": shapes.CLASS_NAMES, "label": shapes.CLASS_NAMES},
        ground_truth={k: v.numpy() if not isinstance(v, dict) else
                      {kk: vv.numpy() for kk, vv in v.items()} for k, v in targets.items()},
        columns=3)
    assert _is_png(blank) and _is_png(drawn)
    plain, overlaid = imread(blank), imread(drawn)
    assert plain.shape == overlaid.shape  # the same grid ...
    assert np.abs(plain - overlaid).mean() > 0.01  # ... with boxes, masks and titles on it


def test_save_prediction_png_with_boxes_scores_and_mask(tmp_path):
    image, targets = shapes.make_example(0, image_size=64)
    path = save_prediction_png(
        str(tmp_path / "prediction.png"), image, targets["objects"]["boxes"],
        targets["objects"]["labels"], scores=np.array([0.9, 0.8, 0.7, 0.0]),
        mask=targets["mask"], class_names=shapes.CLASS_NAMES,
        mask_class_names=("background",) + shapes.CLASS_NAMES, title="shapes #0")
    assert _is_png(path)


def test_save_prediction_png_other_formats_padding_and_no_boxes(tmp_path):
    image = np.random.default_rng(0).uniform(0, 1, (32, 48, 3)).astype("float32")
    boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]])  # rel_yxyx, then padding
    path = save_prediction_png(str(tmp_path / "a.png"), image, boxes, np.array([0, -1]),
                               scores=np.array([0.2, 0.0]), bounding_box_format="rel_yxyx",
                               num_detections=1, score_threshold=0.5)
    assert (tmp_path / "a.png").stat().st_size > 0 and path.endswith("a.png")
    assert _is_png(save_prediction_png(str(tmp_path / "b.png"), image * 255.0))  # image only
    with pytest.raises(ValueError, match="mask must be"):
        save_prediction_png(str(tmp_path / "c.png"), image, mask=np.zeros((4, 4), int))


def test_drawing_neither_switches_the_backend_nor_uses_pyplot(tmp_path, monkeypatch):
    previous = matplotlib.get_backend()
    matplotlib.use("svg")  # not the Agg the plots draw with: a global switch would show
    try:
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, "matplotlib.pyplot", None)  # importing it raises
            image, targets = shapes.make_example(0, image_size=32)
            plotting.plot_history(HISTORY, str(tmp_path / "curves.png"))
            plotting.plot_prediction_gallery(
                np.asarray(image)[None], str(tmp_path / "gallery.png"), segmentation="mask",
                ground_truth={"mask": np.asarray(targets["mask"])[None]})
            save_prediction_png(str(tmp_path / "one.png"), image, mask=targets["mask"])
            plotting.plot_affinity([[1.0, 0.2], [-0.1, 1.0]], ["a", "b"],
                                   str(tmp_path / "a.png"), cosine=[[1.0, -0.3], [-0.3, 1.0]])
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(previous)


# One convention: a single box or mask drawn on a black image, by the gallery and by
# save_prediction_png, lands on the same image pixels in the same colours. The PNGs differ in
# size and margins, so positions are compared in image pixels: the black image's extent in a
# PNG maps PNG pixels to image coordinates (pixel (r, c) covers [c, c + 1] x [r, r + 1]).

SIZE = 20


def _extent(png):
    """(top, bottom, left, right) PNG pixel borders of the black image in `png`."""
    rows, columns = np.nonzero(png[..., :3].max(-1) < 0.05)
    return rows.min(), rows.max() + 1, columns.min(), columns.max() + 1


def _pixel(png, x, y):
    """The RGB colour in `png` at image coordinates (x, y)."""
    top, bottom, left, right = _extent(png)
    row = int(top + y / SIZE * (bottom - top))
    column = int(left + x / SIZE * (right - left))
    return png[row, column, :3]


def _edges(line):
    """Image coordinates of the centres of the coloured runs along a PNG row or column
    of the image (`line` spans the image's extent)."""
    coloured = line[..., :3].max(-1) > 0.3
    cuts = np.flatnonzero(np.diff(np.concatenate([[0], coloured.astype(int), [0]])))
    runs = cuts.reshape(-1, 2)  # [first, last + 1) per run
    return [(a + b) / 2 / len(line) * SIZE for a, b in runs]


def _box_geometry(png, x_mid, y_mid):
    top, bottom, left, right = _extent(png)
    row = int(top + y_mid / SIZE * (bottom - top))
    column = int(left + x_mid / SIZE * (right - left))
    x_edges = _edges(png[row, left:right])
    y_edges = _edges(png[top:bottom, column])
    return x_edges, y_edges


def _draw_both(tmp_path, **drawn):
    black = np.zeros((SIZE, SIZE, 3), "uint8")
    single = save_prediction_png(str(tmp_path / "single.png"), black, **drawn)
    predictions = {}
    if "boxes" in drawn:
        predictions = {"objects_boxes": drawn["boxes"][None],
                       "objects_labels": drawn["labels"][None],
                       "objects_scores": drawn["scores"][None]}
    if "mask" in drawn:
        predictions["mask"] = drawn["mask"][None]
    gallery = plotting.plot_prediction_gallery(black[None], str(tmp_path / "gallery.png"),
                                               predictions=predictions, detection="objects",
                                               segmentation="mask", columns=1)
    return imread(single), imread(gallery)


def test_gallery_and_save_prediction_png_draw_a_box_on_the_same_pixels(tmp_path):
    box = np.array([[5.0, 6.0, 15.0, 14.0]])  # xyxy pixels: columns 5..14, rows 6..13
    single, gallery = _draw_both(tmp_path, boxes=box, labels=np.array([2]),
                                 scores=np.array([0.9]))
    x_single, y_single = _box_geometry(single, 10.0, 10.0)
    x_gallery, y_gallery = _box_geometry(gallery, 10.0, 10.0)
    assert len(x_single) == len(x_gallery) == 2  # the left and right edges
    assert len(y_single) == len(y_gallery) == 2  # the top and bottom edges
    # The same place in both (a half-pixel offset would be 0.5 here) ...
    np.testing.assert_allclose(x_gallery, x_single, atol=0.15)
    np.testing.assert_allclose(y_gallery, y_single, atol=0.15)
    # ... the box's own coordinates: edges on pixel borders.
    np.testing.assert_allclose(x_single, [5.0, 15.0], atol=0.15)
    np.testing.assert_allclose(y_single, [6.0, 14.0], atol=0.15)
    # One palette: label 2 has the same colour in both, palette colour 2.
    edge_single, edge_gallery = _pixel(single, 15.0, 10.0), _pixel(gallery, 15.0, 10.0)
    np.testing.assert_allclose(edge_gallery, edge_single, atol=0.1)
    np.testing.assert_allclose(edge_single, class_colour(2)[:3], atol=0.1)


def test_gallery_and_save_prediction_png_draw_unlabelled_pixels_alike(tmp_path):
    mask = np.zeros((SIZE, SIZE), "int32")
    mask[2:8, 2:8] = 255  # the ignore label
    mask[12:18, 2:8] = -1  # negative: unlabelled too
    mask[12:18, 12:18] = 1  # class 0 of the data (mask value 1 + class)
    single, gallery = _draw_both(tmp_path, mask=mask)
    for x, y in ((5.0, 5.0), (5.0, 15.0), (15.0, 15.0), (15.0, 5.0)):
        np.testing.assert_allclose(_pixel(gallery, x, y), _pixel(single, x, y), atol=0.02)
    for png in (single, gallery):
        ignored, negative = _pixel(png, 5.0, 5.0), _pixel(png, 5.0, 15.0)
        labelled, background = _pixel(png, 15.0, 15.0), _pixel(png, 15.0, 5.0)
        np.testing.assert_allclose(ignored, 0.45 * np.array(IGNORE_COLOUR), atol=0.02)
        np.testing.assert_allclose(negative, ignored, atol=0.02)
        np.testing.assert_allclose(labelled, 0.45 * np.array(class_colour(0)[:3]), atol=0.02)
        np.testing.assert_allclose(background, 0.0, atol=0.02)  # 0: transparent
