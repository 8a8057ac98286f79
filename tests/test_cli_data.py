"""`keras-mtl --data coco|folder`: a user's own data from the shell, in-process
(micro_resnet, 32 px, one step)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_mtl import cli, cli_data
from keras_mtl.data import samples

TINY = ["--trunk", "micro_resnet", "--image-size", "32", "--epochs", "1", "--steps", "1",
        "--batch-size", "4", "--verbose", "0"]
SAMPLE = ["--data", "coco", "--images", samples.pennfudan_coco("images"),
          "--annotations", samples.pennfudan_coco("annotations.json")]


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_train_on_the_coco_sample_then_evaluate_needs_the_same_tasks(tmp_path, capsys):
    output = str(tmp_path / "run")
    assert cli.main(["train", *SAMPLE, "--label-field", "campus", *TINY,
                     "--output-dir", output]) == 0
    printed = capsys.readouterr().out
    assert "coco data: 8 training images; tasks campus (2 classes), objects (1 class), " \
           "mask (2 classes)" in printed
    info = json.load(open(os.path.join(output, "data_info.json")))
    assert {name: task["class_names"] for name, task in info["tasks"].items()} == {
        "campus": ["FudanPed", "PennPed"], "objects": ["person"], "mask": ["background",
                                                                          "person"]}
    assert info["category_ids"] == [1]
    final = json.load(open(os.path.join(output, "history.json")))["final"]
    assert {"campus_accuracy", "objects_map50", "mask_miou"} <= set(final)  # held-out images
    # Without --label-field the data lacks the model's campus task: a one-line error.
    assert cli.main(["evaluate", "--model", os.path.join(output, "model.keras"), *SAMPLE]) == 1
    assert "the model's task(s) ['campus'] are not in the coco data, which has ['objects', " \
           "'mask']" in capsys.readouterr().err


def test_missing_options_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--data", "coco", "--images", "photos", *TINY])
    assert exit_info.value.code == 2
    assert "--data coco needs --images DIR and --annotations FILE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--data", "folder", "--images", "photos", *TINY])
    assert "--data folder needs --images DIR and --masks DIR and/or --labels-csv" in \
        capsys.readouterr().err


def test_bad_data_is_a_one_line_error_naming_the_file(tmp_path, capsys):
    (tmp_path / "empty.json").write_text("")
    assert cli.main(["train", "--data", "coco", "--images", str(tmp_path), "--annotations",
                     str(tmp_path / "empty.json"), *TINY]) == 1
    err = capsys.readouterr().err
    assert err.startswith("keras-mtl train: error: Annotations file ")
    assert "empty.json' is empty" in err and len(err.strip().splitlines()) == 1
    photos, masks = tmp_path / "photos", tmp_path / "masks"
    photos.mkdir()
    masks.mkdir()
    tf.io.write_file(str(photos / "a.png"), tf.io.encode_png(np.zeros((8, 8, 3), "uint8")))
    tf.io.write_file(str(masks / "a.png"), tf.io.encode_png(np.zeros((8, 6, 1), "uint8")))
    assert cli.main(["train", "--data", "folder", "--images", str(photos), "--masks",
                     str(masks), *TINY]) == 1
    assert "Mask '" in capsys.readouterr().err  # names masks/a.png, wrong size


def test_folder_data_gives_tasks_from_the_data_and_held_out_images(tmp_path, capsys):
    photos, masks = tmp_path / "photos", tmp_path / "masks"
    photos.mkdir()
    masks.mkdir()
    rows = ["file_name,scene"]
    for index in range(5):
        mask = np.zeros((24, 40, 1), "uint8")
        mask[4:12, 5 * index:5 * index + 10] = 1 + index % 3
        tf.io.write_file(str(photos / f"p{index}.png"),
                         tf.io.encode_png(np.full((24, 40, 3), 40 * index, "uint8")))
        tf.io.write_file(str(masks / f"p{index}_m.png"), tf.io.encode_png(mask))
        rows.append(f"p{index}.png,{'indoor' if index % 2 else 'outdoor'}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    options = ["--data", "folder", "--images", str(photos), "--masks", str(masks),
               "--mask-suffix", "_m", "--labels-csv", str(tmp_path / "labels.csv"),
               "--resize", "stretch"]
    args, parser = cli.parse_args(["train", *options, *TINY, "--output-dir", "run"])
    settings = cli._train_settings(args, parser)
    tasks, train = cli_data.train_data(args, settings, cli.CLIError)
    assert [(t.name, t.num_classes) for t in tasks] == [("scene", 2), ("mask", 4)]
    assert "folder data: 4 training images; tasks scene (2 classes), mask (4 classes)" in \
        capsys.readouterr().out
    assert json.load(open(os.path.join("run", "data_info.json")))["tasks"]["mask"] == {
        "kind": "segmentation", "class_names": ["0", "1", "2", "3"]}
    images, targets = next(iter(train))  # repeated, whole batches of 4
    assert images.shape == (4, 32, 32, 3) and targets["mask"].shape == (4, 32, 32)
    val = cli._eval_data("folder", None, 32, 4, None, ["mask"], args)
    images, targets = next(iter(val))
    assert images.shape == (1, 32, 32, 3) and list(targets) == ["mask"]  # p4.png held out
    assert targets["mask"].numpy().max() == 2  # 1 + 4 % 3, stretched: no border


def test_val_annotations_validate_on_the_whole_second_file(capsys):
    args, _ = cli.parse_args(["evaluate", "--model", "m.keras", *SAMPLE, "--val-annotations",
                              samples.pennfudan_coco("annotations.json"), "--val-images",
                              samples.pennfudan_coco("images")])
    val = cli._eval_data("coco", None, 32, 16, None, ["objects"], args)
    images, targets = next(iter(val))
    assert images.shape[0] == 10 and list(targets) == ["objects"]  # all 10, not every fifth
    args, _ = cli.parse_args(["evaluate", "--model", "m.keras", *SAMPLE])
    assert next(iter(cli._eval_data("coco", None, 32, 16, None, ["objects"], args)))[0].shape[
        0] == 2


def test_val_annotations_must_number_the_classes_as_the_training_file(tmp_path):
    with open(samples.pennfudan_coco("annotations.json")) as file:
        data = json.load(file)
    for entry in data["images"][:5]:
        entry["campus"] = "Elsewhere"  # three campus names: numbered differently
    (tmp_path / "val.json").write_text(json.dumps(data))
    args, _ = cli.parse_args(["evaluate", "--model", "m.keras", *SAMPLE, "--label-field",
                              "campus", "--val-annotations", str(tmp_path / "val.json")])
    with pytest.raises(cli.CLIError, match=r"val\.json' numbers the classes differently from "
                                           r"--annotations .*'campus': \('Elsewhere', "
                                           r"'PennPed'\)"):
        cli._eval_data("coco", None, 32, 16, None, ["campus"], args)
