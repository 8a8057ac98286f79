import numpy as np
import pytest

pytest.importorskip("matplotlib")

from keras_mtl import plotting  # noqa: E402
from keras_mtl.data import shapes  # noqa: E402

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
    from matplotlib.image import imread

    plain, overlaid = imread(blank), imread(drawn)
    assert plain.shape == overlaid.shape  # the same grid ...
    assert np.abs(plain - overlaid).mean() > 0.01  # ... with boxes, masks and titles on it
