import json
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_mtl.data import pennfudan
from keras_mtl.data.checks import check_batch

REPO = os.path.join(os.path.dirname(__file__), "..", "..")
DATA_DIR = os.path.join(REPO, "..", "shared", "data", "PennFudanPed")
RECIPES = os.path.join(REPO, "recipes")
needs_data = pytest.mark.skipif(not os.path.isdir(DATA_DIR), reason="PennFudanPed not found")


def _recipe():
    """recipes/pennfudan.py as a module."""
    sys.path.insert(0, RECIPES)
    try:
        import pennfudan as recipe
    finally:
        sys.path.remove(RECIPES)
    return recipe

ANNOTATION = """# Compatible with PASCAL Annotation Version 1.00
Image size (X x Y x C) : 559 x 536 x 3
Objects with ground truth : 2 { "PASpersonWalking" "PASpersonWalking" }
Bounding box for object 2 "PASpersonWalking" (Xmin, Ymin) - (Xmax, Ymax) : (420, 171) - (535, 486)
Bounding box for object 1 "PASpersonWalking" (Xmin, Ymin) - (Xmax, Ymax) : (160, 182) - (302, 431)
"""


def test_parse_annotation_converts_one_based_inclusive_to_pixel_edges_in_object_order():
    boxes = pennfudan.parse_annotation(ANNOTATION)
    np.testing.assert_array_equal(boxes, [[159, 181, 302, 431], [419, 170, 535, 486]])
    assert boxes.dtype == np.float32
    assert pennfudan.parse_annotation("Objects with ground truth : 0 { }").shape == (0, 4)
    with pytest.raises(ValueError, match="no readable box"):
        pennfudan.parse_annotation("Objects with ground truth : 2 { }")


def test_split_every_fifth_sorted_name_is_validation():
    names = [f"FudanPed{i:05d}" for i in range(1, 75)] + [f"PennPed{i:05d}" for i in range(1, 97)]
    val = pennfudan.split_names(reversed(names), "val")  # order of the input does not matter
    train = pennfudan.split_names(names, "train")
    assert len(val) == 34 and len(train) == 136 and not set(val) & set(train)
    assert val[:2] == ["FudanPed00005", "FudanPed00010"]
    assert sum(n.startswith("Fudan") for n in val) == 14  # both campuses in validation
    assert pennfudan.split_names(names, "all") == names
    with pytest.raises(ValueError, match="Unknown split"):
        pennfudan.split_names(names, "test")
    assert [pennfudan.campus_label(n) for n in ("FudanPed1", "PennPed2", "x")] == [0, 1, -1]


def test_missing_folder_says_what_layout_is_expected(tmp_path):
    (tmp_path / "PNGImages").mkdir()
    with pytest.raises(FileNotFoundError, match=r"missing \['PedMasks', 'Annotation'\]"):
        pennfudan.load_pennfudan(str(tmp_path))


@needs_data
def test_real_data_boxes_cover_their_mask_pixels_after_resizing():
    arrays = pennfudan.load_arrays(DATA_DIR, "val", image_size=64)
    assert arrays["images"].shape == (34, 64, 64, 3) and arrays["images"].dtype == np.uint8
    assert arrays["masks"].shape == (34, 64, 64) and set(np.unique(arrays["masks"])) == {0, 1}
    assert arrays["boxes"].shape == (34, 8, 4)  # 8 = most pedestrians in one photo
    assert list(arrays["campus"]).count(0) == 14
    covered, total = 0, 0
    for boxes, labels, mask in zip(arrays["boxes"], arrays["labels"], arrays["masks"]):
        assert (boxes[labels < 0] == 0).all()
        inside = np.zeros_like(mask, bool)
        for x0, y0, x1, y1 in boxes[labels >= 0]:
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            inside[int(np.floor(y0)):int(np.ceil(y1)), int(np.floor(x0)):int(np.ceil(x1))] = True
        covered += int((mask.astype(bool) & inside).sum())
        total += int(mask.sum())
    assert covered / total > 0.98  # a few unannotated (occluded) people have mask pixels


@needs_data
def test_pipeline_follows_the_data_contract_of_the_tasks():
    tasks = pennfudan.make_tasks()
    ds = pennfudan.load_pennfudan(DATA_DIR, "val", image_size=64, batch_size=5)
    images, targets = next(iter(ds))
    assert images.shape == (5, 64, 64, 3)
    assert sorted(targets) == ["campus", "pedestrians", "person"]
    images, targets = check_batch((images, targets), tasks, (64, 64, 3))  # raises if not
    assert targets["pedestrians"]["labels"].dtype == tf.int32
    assert sum(1 for _ in ds) == 7  # 34 images, batches of 5
    only_masks = pennfudan.load_pennfudan(DATA_DIR, "train", image_size=64, tasks=["person"],
                                          batched=False)
    image, target = next(iter(only_masks))
    assert image.shape == (64, 64, 3) and list(target) == ["person"]
    with pytest.raises(ValueError, match="Unknown task"):
        pennfudan.load_pennfudan(DATA_DIR, tasks=["boxes"])


@pytest.mark.slow
@needs_data
def test_quick_recipe_trains_evaluates_and_writes_plots(tmp_path, capsys):
    recipe = _recipe()
    results = recipe.main(["--quick", "--data-dir", DATA_DIR, "--output-dir", str(tmp_path),
                           "--epochs", "1"])
    printed = capsys.readouterr().out
    assert "person IoU (person class)" in printed and "pedestrians mAP@.5" in printed
    assert "FLOPs / image" in printed
    iou_row = [line for line in printed.splitlines() if line.startswith("person IoU (person")]
    assert f"{results['metrics']['person']['iou_person']:8.4f}" in iou_row[0]
    report = results["efficiency"]
    assert report["multi_task"]["params"] < report["single_task_sum"]["params"]
    for name in ("curves.png", "task_curves.png", "weights.png", "gallery.png",
                 "efficiency.png"):
        assert os.path.getsize(tmp_path / name) > 1000, name
    with open(tmp_path / "history.json") as file:
        assert "person_loss" in json.load(file)["history"]
    # The SavedModel and its per-head parity table with predict.
    assert os.path.exists(tmp_path / "export" / "1" / "saved_model.pb")
    header = next(line for line in printed.splitlines() if line.startswith("output "))
    assert header.split()[-1] == "SavedModel"
    assert "pedestrians_num_detections" in printed and "share of pixels differing" in printed
    assert results["export"]["failures"] == []


@pytest.mark.slow
@needs_data
def test_quick_recipe_with_baselines_prints_the_comparison(tmp_path, capsys):
    recipe = _recipe()
    results = recipe.main(["--quick", "--baselines", "--data-dir", DATA_DIR,
                           "--output-dir", str(tmp_path), "--architecture", "mtan"])
    printed = capsys.readouterr().out
    assert "architecture mtan" in printed
    assert "delta-m" in printed and "training time" in printed
    table = results["comparison"]
    summed = sum(run["train_seconds"] for run in table["single_task"].values())
    assert sorted(table["single_task"]) == ["campus", "pedestrians", "person"]
    assert results["train_time_ratio"] == pytest.approx(
        table["multi_task"]["train_seconds"] / summed)
    assert f"training time ratio {results['train_time_ratio']:.2f}" in printed
    assert os.path.getsize(tmp_path / "comparison.png") > 1000


def test_recipe_task_weights_become_static_weights(capsys):
    recipe = _recipe()
    args = recipe.parse_args(["--task-weights", "person=4", "campus=0.5"])
    assert args.weighting == {"campus": 0.5, "pedestrians": 1.0, "person": 4.0}
    assert recipe.parse_args([]).weighting == "auto"  # no hand-set weights by default
    assert recipe.parse_args(["--weighting", "famo"]).weighting == "famo"
    with pytest.raises(SystemExit):
        recipe.parse_args(["--task-weights", "boxes=2"])
    assert "unknown task 'boxes'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        recipe.parse_args(["--task-weights", "person=lots"])
    assert "'person=lots' is not TASK=NUMBER" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        recipe.parse_args(["--task-weights", "person=2", "--weighting", "famo"])
    assert "not both" in capsys.readouterr().err


def test_recipe_architecture_is_checked_before_training(capsys):
    recipe = _recipe()
    assert recipe.parse_args([]).architecture == "hps"
    assert recipe.parse_args(["--architecture", "mtan"]).architecture == "mtan"
    with pytest.raises(SystemExit):
        recipe.parse_args(["--architecture", "mtna"])
    error = capsys.readouterr().err
    assert "--architecture 'mtna' is not one of" in error and "'mtan'" in error


def test_recipe_gives_the_person_mask_head_two_convolutions_of_its_own_by_default():
    recipe = _recipe()
    tasks = {task.name: task for task in recipe.make_tasks(recipe.parse_args([]))}
    assert tasks["person"].head_convs == 2 and tasks["person"].dice_weight == 0.0
    plain = recipe.make_tasks(recipe.parse_args(["--mask-head-convs", "0"]))
    assert [t.head_convs for t in plain if t.name == "person"] == [0]
    with pytest.raises(ValueError, match="person.*head_convs must be >= 0, got -1"):
        recipe.make_tasks(recipe.parse_args(["--mask-head-convs", "-1"]))
