"""The COCO-format loader: id remapping, polygon/RLE masks, labels, letterboxing, bad data."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from pycocotools import mask as mask_utils

from keras_mtl import tasks as mtl_tasks
from keras_mtl.data import DataError, coco, mix_datasets, samples
from keras_mtl.data.samples import build_pennfudan_coco

REPO = os.path.join(os.path.dirname(__file__), "..", "..")
PENNFUDAN = os.path.join(REPO, "..", "shared", "data", "PennFudanPed")

# An 80x40 (WxH) photo: a grey rectangle at x 10..30, y 5..25 (category 7, a polygon)
# and another at x 50..70, y 10..30 (category 3, uncompressed RLE).
WIDTH, HEIGHT = 80, 40


def _rle_of_rectangle(x0, y0, x1, y1):
    """Uncompressed COCO RLE: run lengths down the columns, starting with a run of zeros."""
    mask = np.zeros((HEIGHT, WIDTH), "uint8")
    mask[y0:y1, x0:x1] = 1
    flat = mask.flatten(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]]))
    return {"size": [HEIGHT, WIDTH], "counts": [int(r) for r in runs]}  # flat[0] == 0


def _write_image(path, width=WIDTH, height=HEIGHT):
    image = np.zeros((height, width, 3), "uint8")
    image[5:25, 10:30] = 200
    image[10:30, 50:70] = 100
    tf.io.write_file(path, tf.io.encode_png(image))


def _write_coco(folder, images=None, annotations=None, categories=None, **image_fields):
    """Writes `folder/images/a.png` + `b.png` and `folder/ann.json`; returns their paths."""
    os.makedirs(folder / "images", exist_ok=True)
    for name in ("a.png", "b.png"):
        _write_image(str(folder / "images" / name))
    if images is None:
        images = [{"id": 1, "file_name": "a.png", "width": WIDTH, "height": HEIGHT,
                   **image_fields},
                  {"id": 2, "file_name": "b.png", "width": WIDTH, "height": HEIGHT}]
    if annotations is None:
        annotations = [
            {"id": 10, "image_id": 1, "category_id": 7, "bbox": [10, 5, 20, 20], "iscrowd": 0,
             "segmentation": [[10, 5, 30, 5, 30, 25, 10, 25]]},
            {"id": 11, "image_id": 1, "category_id": 3, "bbox": [50, 10, 20, 20], "iscrowd": 0,
             "segmentation": _rle_of_rectangle(50, 10, 70, 30)},
        ]
    if categories is None:
        categories = [{"id": 7, "name": "square"}, {"id": 3, "name": "box"}]
    path = folder / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": categories}))
    return str(folder / "images"), str(path)


def _load_all(images_dir, annotations, **kwargs):
    kwargs.setdefault("image_size", 32)
    ds, info = coco.load_coco_json(images_dir, annotations, batch_size=8, with_info=True,
                                   **kwargs)
    images, targets = next(iter(ds))
    return images.numpy(), tf.nest.map_structure(lambda t: t.numpy(), targets), info


def _span(mask):
    """xyxy pixel edges of the True pixels of a 2-D array."""
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_category_ids_are_remapped_in_id_order_and_masks_align_with_boxes(tmp_path):
    images_dir, annotations = _write_coco(tmp_path)
    images, targets, info = _load_all(images_dir, annotations)
    assert info.task_names == ["objects", "mask"]
    assert info.category_ids == (3, 7)  # class 0 = id 3 "box", class 1 = id 7 "square"
    assert info.class_names("objects") == ("box", "square")
    assert info.class_names("mask") == ("background", "box", "square")
    # Letterbox 80x40 -> 32x16, centred: 8 rows of border above and below, scale 0.4.
    boxes, labels = targets["objects"]["boxes"][0], targets["objects"]["labels"][0]
    np.testing.assert_array_equal(labels, [1, 0])
    np.testing.assert_allclose(boxes, [[4, 10, 12, 18], [20, 12, 28, 20]], atol=1e-4)
    mask = targets["mask"][0]
    assert _span(mask == 2) == [4, 10, 12, 18]  # the polygon, class 1 + 1
    assert _span(mask == 1) == [20, 12, 28, 20]  # the RLE, class 0 + 1
    assert (mask[:8] == 255).all() and (mask[24:] == 255).all()  # border: ignored
    assert (mask[8:24] != 255).all()
    assert _span(images[0, ..., 0] > 150) == [4, 10, 12, 18]  # the pixels moved alike
    np.testing.assert_array_equal(targets["objects"]["labels"][1], [-1, -1])  # no objects
    assert set(np.unique(targets["mask"][1])) == {0, 255}  # background + border


def test_stretch_resize_and_relative_box_format(tmp_path):
    images_dir, annotations = _write_coco(tmp_path)
    _, targets, info = _load_all(images_dir, annotations, resize="stretch",
                                 bounding_box_format="rel_yxyx")
    # Stretch 80x40 -> 32x32: x * 0.4, y * 0.8; rel_yxyx divides by 32.
    np.testing.assert_allclose(targets["objects"]["boxes"][0],
                               np.array([[4, 4, 20, 12], [8, 20, 24, 28]]) / 32, atol=1e-5)
    assert _span(targets["mask"][0] == 2) == [4, 4, 12, 20]
    assert info.make_tasks()[0].bounding_box_format == "rel_yxyx"


def test_compressed_rle_crowd_and_missing_segmentation(tmp_path):
    rle = mask_utils.encode(np.asfortranarray(
        np.pad(np.ones((20, 20), "uint8"), [(10, 10), (50, 10)])))
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [50, 10, 20, 20], "iscrowd": 1,
         "segmentation": {"size": [HEIGHT, WIDTH], "counts": rle["counts"].decode()}},
        {"id": 2, "image_id": 2, "category_id": 7, "bbox": [10, 5, 20, 20]},  # no mask
    ]
    images_dir, path = _write_coco(tmp_path, annotations=annotations)
    _, targets, _ = _load_all(images_dir, path)
    np.testing.assert_array_equal(targets["objects"]["labels"], [[-1], [1]])  # crowd: no box
    assert _span(targets["mask"][0] == 1) == [20, 12, 28, 20]  # crowd: still painted
    assert (targets["mask"][1] == 255).all()  # a box without a mask: unlabelled image


def test_image_labels_from_a_field_and_a_csv_and_task_selection(tmp_path):
    images_dir, path = _write_coco(tmp_path, weather="sun")
    csv = tmp_path / "labels.csv"
    csv.write_text("file_name,count,site\nb.png,3,\na.png,1,north\n")
    _, targets, info = _load_all(images_dir, path, label_fields=["weather"], labels_csv=str(csv),
                                 tasks=["site", "count", "weather"])
    assert info.task_names == ["site", "count", "weather"] and sorted(targets) == sorted(
        info.task_names)
    np.testing.assert_array_equal(targets["weather"], [0, -1])  # b.png has no field
    np.testing.assert_array_equal(targets["count"], [1, 3])  # integers are ids
    assert info.class_names("count") == ("0", "1", "2", "3")
    np.testing.assert_array_equal(targets["site"], [0, -1])  # an empty cell
    assert [t.num_classes for t in info.make_tasks()] == [1, 4, 1]
    with pytest.raises(ValueError, match=r"Unknown task name\(s\) \['boxes'\]; this data has"):
        coco.load_coco_json(images_dir, path, tasks=["boxes"])
    with pytest.raises(DataError, match=r"'.*ann\.json', image field 'season': no image has a "
                                        "label"):
        coco.load_coco_json(images_dir, path, label_fields=["season"])
    csv.write_text("file_name,count\na.png,2\nb.png,many\n")
    with pytest.raises(DataError, match=r"labels\.csv', column 'count': labels mix class ids "
                                        "and class names"):
        coco.load_coco_json(images_dir, path, labels_csv=str(csv))


def test_splits_take_every_fifth_file_name_and_padding_is_shared(tmp_path):
    images = [{"id": i, "file_name": f"{name}.png", "width": WIDTH, "height": HEIGHT}
              for i, name in enumerate("abcdefghij")]
    os.makedirs(tmp_path / "images")
    for entry in images:
        _write_image(str(tmp_path / "images" / entry["file_name"]))
    annotations = [{"id": k, "image_id": 0, "category_id": 1, "bbox": [1, 1, 5, 5]}
                   for k in range(3)]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "thing"}]}))
    train = coco.load_coco_json(str(tmp_path / "images"), str(path), "train", image_size=32,
                                batch_size=16, shuffle=False)
    val = coco.load_coco_json(str(tmp_path / "images"), str(path), "val", image_size=32,
                              batch_size=16)
    train_labels = next(iter(train))[1]["objects"]["labels"].numpy()
    val_labels = next(iter(val))[1]["objects"]["labels"].numpy()
    assert train_labels.shape == (8, 3) and val_labels.shape == (2, 3)  # e.png and j.png
    assert (train_labels[0] == 0).all() and (val_labels == -1).all()


def test_works_with_mix_datasets(tmp_path):
    images_dir, path = _write_coco(tmp_path)
    boxes = coco.load_coco_json(images_dir, path, image_size=32, tasks=["objects"],
                                batched=False)
    masks = coco.load_coco_json(images_dir, path, image_size=32, tasks=["mask"], batched=False)
    model_tasks = [mtl_tasks.Detection("objects", 2), mtl_tasks.Segmentation("mask", 3)]
    images, targets, weights = next(iter(mix_datasets([boxes, masks], model_tasks,
                                                      batch_size=4, seed=0)))
    assert images.shape == (4, 32, 32, 3) and sorted(targets) == ["mask", "objects"]
    objects, mask = weights["objects"].numpy(), weights["mask"].numpy()
    np.testing.assert_array_equal(objects + mask, np.ones(4))  # each example labels one task
    assert 0 < objects.sum() < 4


def test_the_shipped_sample_loads_with_its_campus_labels():
    ds, info = coco.load_coco_json(samples.pennfudan_coco("images"),
                                   samples.pennfudan_coco("annotations.json"), image_size=32,
                                   batch_size=10, label_fields=["campus"], with_info=True)
    _, targets = next(iter(ds))
    assert info.task_names == ["campus", "objects", "mask"] and info.num_examples == 10
    np.testing.assert_array_equal(targets["campus"], [0] * 5 + [1] * 5)  # FudanPed, PennPed
    assert info.class_names("campus") == ("FudanPed", "PennPed")
    with open(samples.pennfudan_coco("annotations.json")) as file:
        image_ids = [a["image_id"] for a in json.load(file)["annotations"]]
    np.testing.assert_array_equal((targets["objects"]["labels"].numpy() == 0).sum(axis=1),
                                  np.bincount(image_ids, minlength=11)[1:])  # one per person
    assert set(np.unique(targets["mask"])) == {0, 1, 255}
    csv_ds = coco.load_coco_json(samples.pennfudan_coco("images"),
                                 samples.pennfudan_coco("annotations.json"), image_size=32,
                                 batch_size=10, tasks=["campus"],
                                 labels_csv=samples.pennfudan_coco("labels.csv"))
    np.testing.assert_array_equal(next(iter(csv_ds))[1]["campus"], targets["campus"])


@pytest.mark.skipif(not os.path.isdir(PENNFUDAN), reason="PennFudanPed not found")
def test_the_builder_writes_the_shipped_sample(tmp_path):
    path = build_pennfudan_coco.write_pennfudan_coco(PENNFUDAN, str(tmp_path))
    with open(path) as written, open(samples.pennfudan_coco("annotations.json")) as shipped:
        assert json.load(written) == json.load(shipped)
    assert (tmp_path / "labels.csv").read_text() == open(
        samples.pennfudan_coco("labels.csv")).read()
    assert sorted(os.listdir(tmp_path / "images")) == sorted(
        os.listdir(samples.pennfudan_coco("images")))


# --- bad data: each error names the file --------------------------------------------------
def _bad_annotation(**change):
    annotation = {"id": 5, "image_id": 1, "category_id": 7, "bbox": [10, 5, 20, 20],
                  "segmentation": [[10, 5, 30, 5, 30, 25, 10, 25]]}
    return [{**annotation, **change}]


BAD = {
    "negative size": (dict(annotations=_bad_annotation(bbox=[10, 5, -4, 20])),
                      r"annotation 5 of image '.*a\.png' has a box of negative size"),
    "outside": (dict(annotations=_bad_annotation(bbox=[70, 5, 20, 20])),
                r"annotation 5 of image '.*a\.png' has a box outside the image: bbox \[70, "
                r"5, 20, 20\] .* 80x40"),
    "mask size": (dict(annotations=_bad_annotation(
        segmentation={"size": [20, 40], "counts": [0, 800]})),
        r"annotation 5 of image '.*a\.png' has a mask of the wrong size: RLE size \[20, 40\]"),
    "category": (dict(annotations=_bad_annotation(category_id=99)),
                 r"annotation 5 in '.*ann\.json' \(image '.*a\.png'\) has category id 99, which "
                 r"is not in the categories list \[3, 7\]"),
    "declared size": (dict(images=[{"id": 1, "file_name": "a.png", "width": 64,
                                    "height": 40}]),
                      r"Image '.*a\.png' is 80x40 pixels but the annotations say 64x40"),
    "missing image": (dict(images=[{"id": 1, "file_name": "gone.jpg"}]),
                      r"Image '.*gone\.jpg' \(listed in '.*ann\.json'\) does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_annotations_raise_a_data_error_naming_the_file(tmp_path, case):
    change, message = BAD[case]
    images_dir, path = _write_coco(tmp_path, **change)
    with pytest.raises(DataError, match=message):
        coco.load_coco_json(images_dir, path, image_size=32)


@pytest.mark.parametrize("content", [b"not an image at all", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"],
                         ids=["garbage", "truncated png"])
def test_a_corrupt_image_is_named(tmp_path, content):
    images_dir, path = _write_coco(tmp_path)
    (tmp_path / "images" / "b.png").write_bytes(content)
    with pytest.raises(DataError, match=r"Cannot read image '.*b\.png': it is corrupt"):
        coco.load_coco_json(images_dir, path, image_size=32)


@pytest.mark.parametrize("text, message", [
    ("", r"Annotations file '.*ann\.json' is empty"),
    ("  \n", r"Annotations file '.*ann\.json' is empty"),
    ('{"images": [], "annotations": []}', r"'.*ann\.json' has no images"),
    ('{"images": [', r"'.*ann\.json' is not valid JSON: .* line 1"),
], ids=["empty", "blank", "no images", "invalid"])
def test_an_empty_or_invalid_annotations_file_is_named(tmp_path, text, message):
    (tmp_path / "ann.json").write_text(text)
    with pytest.raises(DataError, match=message):
        coco.load_coco_json(str(tmp_path), str(tmp_path / "ann.json"))
