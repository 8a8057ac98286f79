"""COCO-format data of your own: a JSON file of annotations and a folder of images.

The JSON is the format COCO, CVAT, Label Studio, Roboflow and most labelling
tools export:

    {"images": [{"id": 1, "file_name": "a.jpg", "width": 640, "height": 480, ...}],
     "annotations": [{"id": 7, "image_id": 1, "category_id": 18, "bbox": [x, y, w, h],
                      "segmentation": [[x1, y1, x2, y2, ...]] or {"size": [h, w], "counts": ...},
                      "iscrowd": 0}],
     "categories": [{"id": 18, "name": "dog"}, ...]}

It becomes up to three kinds of task (DESIGN.md's data contract):
- detection (`detection_name`, default `"objects"`): `{"boxes": (N, 4) float32,
  "labels": (N,) int32}` in `bounding_box_format` pixels of the resized
  image, padded with zero boxes and label -1. Category ids are numbered
  0..K-1 in increasing id order (`DatasetInfo.category_ids[i]` is the COCO
  id of class `i`). Crowd annotations (`iscrowd: 1`) are not boxes to find.
- segmentation (`segmentation_name`, default `"mask"`): an `(H, W)` uint8
  class map, 0 = background and `1 + class` inside an object, made from
  the polygons or RLE of every annotation (pycocotools); smaller objects are
  drawn over larger ones. An image with an annotation that has no
  segmentation is unlabelled for this task (all `ignore_index`).
- image-level classification, one task per label: an image field
  (`label_fields`, e.g. `"weather"` in each `images` entry) or a column of a
  CSV (`labels_csv`, columns `file_name,<label>,...`). Names are numbered
  in sorted order, integers are used as class ids; a missing label is -1.

Every image is decoded and resized once (`"letterbox"` by default: the
aspect ratio is kept and boxes and masks move with the image) and kept in
memory: about `I * H * W * 4` bytes, e.g. 0.8 GB for 5,000 images at 192 px.
Bad data raises `DataError` naming the file: a missing, empty or corrupt
image, a box with negative size or outside the image (by more than
`BOX_TOLERANCE` pixels; boxes within it are clipped), an RLE mask whose
size differs from its image, a category id not in `categories`, an empty
or invalid annotations file.

Example:

>>> from keras_mtl.data import coco, samples
>>> train, info = coco.load_coco_json(samples.pennfudan_coco("images"),
...                                   samples.pennfudan_coco("annotations.json"), "train",
...                                   image_size=64, label_fields=["campus"], with_info=True)
>>> info.task_names, info.class_names("campus")
(['campus', 'objects', 'mask'], ('FudanPed', 'PennPed'))
>>> images, targets = next(iter(train))
>>> images.shape, targets["objects"]["boxes"].shape, targets["mask"].shape
(TensorShape([8, 64, 64, 3]), TensorShape([8, 6, 4]), TensorShape([8, 64, 64]))
>>> model = keras_mtl.build_mtl(info.make_tasks(), trunk="micro_resnet", weights=None,
...                             input_shape=(64, 64, 3))
"""

import json
import os

import numpy as np

from keras_mtl.data import files, letterbox, pipeline
from keras_mtl.data.files import DataError
from keras_mtl.data.info import DatasetInfo
from keras_mtl.data.splits import split_names

BOX_TOLERANCE = 1.0  # pixels a box may stick out of its image before it is an error
DEFAULT_TASK_NAMES = {"detection": "objects", "segmentation": "mask"}


# --- reading the JSON ----------------------------------------------------------------------
def _load_json(path):
    if not os.path.isfile(path):
        raise DataError(f"Annotations file {path!r} does not exist.")
    with open(path, encoding="utf-8") as file:
        text = file.read()
    if not text.strip():
        raise DataError(f"Annotations file {path!r} is empty.")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"Annotations file {path!r} is not valid JSON: {error.msg} at line "
                        f"{error.lineno}, column {error.colno}.") from error
    if not isinstance(data, dict) or not data.get("images"):
        raise DataError(f"Annotations file {path!r} has no images: a COCO file is an object "
                        "with an \"images\" list (and \"annotations\", \"categories\").")
    return data


def read_coco_json(annotations_file, images_dir):
    """Reads and checks a COCO-format annotations file (no image is decoded).

    Args:
        annotations_file: the JSON file.
        images_dir: the folder the images' `file_name`s are relative to.

    Returns:
        A dict: `"images"`, a list of records sorted by file name, each
        `{"file_name", "path", "width", "height", "annotations", "image"}`
        (`"image"` is the JSON entry, `width`/`height` may be None);
        `"category_ids"` (sorted COCO ids) and `"class_names"` (their names).

    Raises:
        DataError: the file is missing, empty or not COCO JSON; an image
            entry has no `file_name` or a duplicate one, or its file is
            missing; an annotation names an unknown image or category.

    Example:

    >>> from keras_mtl.data import samples
    >>> coco = read_coco_json(samples.pennfudan_coco("annotations.json"),
    ...                       samples.pennfudan_coco("images"))
    >>> coco["category_ids"], coco["class_names"], len(coco["images"])
    ((1,), ('person',), 10)
    """
    data = _load_json(annotations_file)
    categories = data.get("categories") or []
    by_id = {}
    for category in categories:
        if "id" not in category:
            raise DataError(f"Annotations file {annotations_file!r}: a category has no id: "
                            f"{category}.")
        by_id[category["id"]] = str(category.get("name", category["id"]))
    category_ids = tuple(sorted(by_id))
    records, by_image = {}, {}
    for entry in data["images"]:
        name = entry.get("file_name")
        if not name or "id" not in entry:
            raise DataError(f"Annotations file {annotations_file!r}: an image entry needs an "
                            f"\"id\" and a \"file_name\", got {entry}.")
        if name in records:
            raise DataError(f"Annotations file {annotations_file!r}: image {name!r} is listed "
                            "twice.")
        path = os.path.join(images_dir, name)
        if not os.path.isfile(path):
            raise DataError(f"Image {path!r} (listed in {annotations_file!r}) does not exist.")
        records[name] = {"file_name": name, "path": path, "width": entry.get("width"),
                         "height": entry.get("height"), "annotations": [], "image": entry}
        by_image[entry["id"]] = records[name]
    for annotation in data.get("annotations") or []:
        record = by_image.get(annotation.get("image_id"))
        where = f"annotation {annotation.get('id')!r} in {annotations_file!r}"
        if record is None:
            raise DataError(f"The {where} names image id {annotation.get('image_id')!r}, which "
                            "is not in \"images\".")
        if annotation.get("category_id") not in by_id:
            raise DataError(f"The {where} (image {record['path']!r}) has category id "
                            f"{annotation.get('category_id')!r}, which is not in the categories "
                            f"list {list(category_ids)}.")
        record["annotations"].append(annotation)
    return {"images": [records[name] for name in sorted(records)],
            "category_ids": category_ids,
            "class_names": tuple(by_id[i] for i in category_ids)}


# --- one example ---------------------------------------------------------------------------
def _box(annotation, record, height, width):
    """An annotation's `[x, y, w, h]` -> checked, clipped `(4,)` xyxy pixels (None if empty)."""
    where = f"annotation {annotation.get('id')!r} of image {record['path']!r}"
    bbox = annotation.get("bbox")
    if bbox is None or len(bbox) != 4:
        raise DataError(f"The {where} has no \"bbox\" [x, y, width, height]: {bbox!r}.")
    x, y, w, h = (float(v) for v in bbox)
    if w < 0 or h < 0:
        raise DataError(f"The {where} has a box of negative size: bbox {bbox} (width and height "
                        "must be >= 0).")
    if (x < -BOX_TOLERANCE or y < -BOX_TOLERANCE or x + w > width + BOX_TOLERANCE
            or y + h > height + BOX_TOLERANCE):
        raise DataError(f"The {where} has a box outside the image: bbox {bbox} "
                        f"([x, y, width, height]) in a {width}x{height} image.")
    box = np.clip([x, y, x + w, y + h], 0.0, [width, height, width, height])  # (4,)
    return box if box[2] > box[0] and box[3] > box[1] else None


def _instance_mask(annotation, record, height, width):
    """An annotation's polygons or RLE -> `(H, W)` uint8 0/1, or None without segmentation."""
    from pycocotools import mask as mask_utils

    segmentation = annotation.get("segmentation")
    where = f"annotation {annotation.get('id')!r} of image {record['path']!r}"
    if not segmentation:
        return None
    if isinstance(segmentation, dict):  # RLE, compressed (str counts) or not (list)
        size = [int(v) for v in segmentation.get("size", ())]
        if size != [height, width]:
            raise DataError(f"The {where} has a mask of the wrong size: RLE size {size} "
                            f"([height, width]) for a {width}x{height} image.")
        counts = segmentation.get("counts")
        rle = (mask_utils.frPyObjects(segmentation, height, width) if isinstance(counts, list)
               else {"size": size, "counts": counts.encode() if isinstance(counts, str)
                     else counts})
    else:  # polygons [[x1, y1, x2, y2, ...], ...]
        polygons = [list(map(float, p)) for p in segmentation]
        if any(len(p) < 6 or len(p) % 2 for p in polygons):
            raise DataError(f"The {where} has a polygon with fewer than 3 points or an odd "
                            "number of coordinates.")
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    return mask_utils.decode(rle)  # (H, W) uint8


def _semantic_mask(annotations, record, class_of, height, width, ignore_index):
    """`(H, W)` uint8: 0 background, `1 + class` on objects; all `ignore_index` if any
    annotation lacks a segmentation."""
    mask = np.zeros((height, width), "uint8")
    drawn = []
    for annotation in annotations:
        instance = _instance_mask(annotation, record, height, width)
        if instance is None:
            return np.full((height, width), ignore_index, "uint8")
        drawn.append((int(instance.sum()), class_of[annotation["category_id"]], instance))
    for _, label, instance in sorted(drawn, key=lambda d: -d[0]):  # large first, small on top
        mask[instance > 0] = label + 1
    return mask


def coco_example(record, class_of, image_size, resize="letterbox", boxes=True, mask=True,
                 ignore_index=255):
    """Decodes, checks and resizes one image record of `read_coco_json`.

    Args:
        record: one entry of `read_coco_json(...)["images"]`.
        class_of: `{COCO category id: contiguous class}`.
        image_size: `(height, width)` of the result.
        resize: `"letterbox"` or `"stretch"`.
        boxes, mask: whether to make the detection / segmentation targets.
        ignore_index: mask value of unlabelled pixels (and the letterbox border).

    Returns:
        `(image (h, w, 3) uint8, boxes (N, 4) float32 xyxy, labels (N,) int32,
        mask (h, w) uint8)`; boxes, labels or mask are None when not asked.

    Raises:
        DataError: see the module docstring.
    """
    image = files.read_image(record["path"])  # (H, W, 3)
    height, width = image.shape[:2]
    declared = (record["width"], record["height"])
    if None not in declared and (int(declared[0]), int(declared[1])) != (width, height):
        raise DataError(f"Image {record['path']!r} is {width}x{height} pixels but the "
                        f"annotations say {declared[0]}x{declared[1]}.")
    annotations = record["annotations"]
    found, labels = [], []
    if boxes:
        for annotation in annotations:
            box = _box(annotation, record, height, width)
            if box is not None and not annotation.get("iscrowd", 0):
                found.append(box)
                labels.append(class_of[annotation["category_id"]])
    semantic = (_semantic_mask(annotations, record, class_of, height, width, ignore_index)
                if mask else None)
    resized, moved, semantic = letterbox.resize_example(
        image, image_size, resize, boxes=np.reshape(found, (-1, 4)) if boxes else None,
        mask=semantic, mask_pad_value=ignore_index)
    return resized, moved, (np.array(labels, "int32") if boxes else None), semantic


# --- image-level labels --------------------------------------------------------------------
def image_labels(records, label_fields=(), labels_csv=None, source="the annotations"):
    """Image-level labels from image fields and/or a CSV, per record.

    Args:
        records: `read_coco_json(...)["images"]`.
        label_fields: fields of the image entries that hold a label.
        labels_csv: a CSV of labels (see `keras_mtl.data.files.read_labels_csv`).
        source: the annotations file, named in errors.

    Returns:
        `{task name: ((I,) int32 ids, class names)}`; -1 = unlabelled.

    Raises:
        DataError: no image has the field, or the CSV matches no image.
    """
    labels = {}
    for field in label_fields:
        values = [record["image"].get(field) for record in records]
        labels[field] = files.class_ids(values, f"{source}, image field {field!r}")
    if labels_csv:
        columns, rows = files.read_labels_csv(labels_csv)
        matched = [rows.get(r["file_name"], rows.get(os.path.basename(r["file_name"])))
                   for r in records]
        if not any(matched):
            raise DataError(f"Labels CSV {labels_csv!r} names none of the images (e.g. "
                            f"{records[0]['file_name']!r}).")
        for column in columns:
            values = [None if row is None else row[column] for row in matched]
            labels[column] = files.class_ids(values, f"Labels CSV {labels_csv!r}, column "
                                                     f"{column!r}")
    return labels


# --- the loader ----------------------------------------------------------------------------
def _pad_objects(boxes, labels, max_objects, image_size, bounding_box_format):
    """Lists of `(N_i, 4)` xyxy / `(N_i,)` -> `(I, N, 4)` in the format, `(I, N)`, padded."""
    count = len(boxes)
    padded = np.zeros((count, max_objects, 4), "float32")
    classes = np.full((count, max_objects), -1, "int32")
    for index, (b, c) in enumerate(zip(boxes, labels)):
        n = min(len(c), max_objects)
        padded[index, :n], classes[index, :n] = b[:n], c[:n]
    if bounding_box_format != "xyxy" and count:
        from keras.utils import bounding_boxes

        converted = bounding_boxes.convert_format(
            padded, source="xyxy", target=bounding_box_format, height=image_size[0],
            width=image_size[1])
        padded = np.where(classes[..., None] >= 0, np.asarray(converted, "float32"), 0.0)
    return padded, classes


def load_coco_json(images_dir, annotations_file, split="all", image_size=128, batch_size=8,
                   resize="letterbox", tasks=None, label_fields=(), labels_csv=None,
                   detection_name=DEFAULT_TASK_NAMES["detection"],
                   segmentation_name=DEFAULT_TASK_NAMES["segmentation"],
                   bounding_box_format="xyxy", max_objects=None, ignore_index=255, shuffle=None,
                   repeat=False, augment=None, drop_remainder=False, seed=0, val_every=5, fold=0,
                   batched=True, with_info=False):
    """A `tf.data` pipeline of a COCO-format data set in the data contract.

    Args:
        images_dir: the folder the `file_name`s are relative to.
        annotations_file: the COCO JSON file.
        split: `"all"`, or `"train"` / `"val"`: every `val_every`-th image in
            file-name order validates (see `keras_mtl.data.splits`). With
            separate train and validation files, load each with `"all"`.
        image_size: `S` or `(height, width)` of the examples.
        batch_size: examples per batch.
        resize: `"letterbox"` (keep the aspect ratio, pad) or `"stretch"`.
        tasks: task names to keep; default every task the data has
            (detection if any annotation has a box, segmentation if any has a
            polygon or RLE, one classification per label field / CSV column).
        label_fields: image-entry fields holding image-level labels.
        labels_csv: a CSV of image-level labels (`file_name,<label>,...`).
        detection_name, segmentation_name: the names of those tasks.
        bounding_box_format: format of the boxes yielded (pixels or relative,
            a `keras.utils.bounding_boxes` name).
        max_objects: boxes per image after padding; default the most
            (non-crowd) boxes of an image in the file.
        ignore_index: mask value of unlabelled pixels and the letterbox border.
        shuffle: default: only for `"train"`.
        repeat, augment, drop_remainder, seed, batched: as
            `keras_mtl.data.pipeline.from_arrays`; `batched=False` yields
            single examples for `mix_datasets`.
        val_every, fold: the split (see `keras_mtl.data.splits`).
        with_info: also return a `DatasetInfo` (tasks, class names, the
            category id mapping).

    Returns:
        A `tf.data.Dataset` of `(images, targets)`, images `(B, h, w, 3)`
        uint8, or `(dataset, info)` with `with_info=True`.

    Raises:
        DataError: bad data (see the module docstring), naming the file.
        ValueError: an unknown task name, split or resize mode.
        ImportError: masks are needed and pycocotools is not installed.
    """
    size = letterbox.image_size_pair(image_size)
    letterbox.check_mode(resize)
    coco = read_coco_json(annotations_file, images_dir)
    records = coco["images"]
    annotations = [a for r in records for a in r["annotations"]]
    labels = image_labels(records, label_fields, labels_csv, repr(annotations_file))
    available = list(labels)
    if coco["category_ids"] and any("bbox" in a for a in annotations):
        available.append(detection_name)
    if coco["category_ids"] and any(a.get("segmentation") for a in annotations):
        available.append(segmentation_name)
    if len(set(available)) != len(available):
        raise ValueError(f"Two tasks share a name in {available}; rename the label or pass "
                         "detection_name / segmentation_name.")
    if not available:
        raise DataError(f"Annotations file {annotations_file!r} has no boxes, no masks and no "
                        "image-level label (pass label_fields or labels_csv).")
    keep = pipeline.select_tasks(available, tasks)
    with_boxes, with_mask = detection_name in keep, segmentation_name in keep
    if with_mask and len(coco["category_ids"]) > 254:
        raise ValueError(f"{len(coco['category_ids'])} categories do not fit a uint8 mask "
                         "(at most 254 besides background and ignore).")
    chosen = set(split_names([r["file_name"] for r in records], split, val_every, fold))
    class_of = {cid: i for i, cid in enumerate(coco["category_ids"])}
    examples = [coco_example(r, class_of, size, resize, with_boxes, with_mask, ignore_index)
                if r["file_name"] in chosen else None for r in records]
    picked = [i for i, e in enumerate(examples) if e is not None]
    if not picked:
        raise DataError(f"Annotations file {annotations_file!r}: split {split!r} has no image.")
    targets = {name: ids[picked] for name, (ids, _) in labels.items() if name in keep}
    if with_boxes:
        if max_objects is None:
            max_objects = max([1] + [sum(1 for a in r["annotations"] if not a.get("iscrowd", 0))
                                     for r in records])
        boxes, classes = _pad_objects([examples[i][1] for i in picked],
                                      [examples[i][2] for i in picked], max_objects, size,
                                      bounding_box_format)
        targets[detection_name] = {"boxes": boxes, "labels": classes}
    if with_mask:
        targets[segmentation_name] = np.stack([examples[i][3] for i in picked])  # (I, h, w)
    images = np.stack([examples[i][0] for i in picked])  # (I, h, w, 3)
    dataset = pipeline.from_arrays(
        images, {name: targets[name] for name in keep}, batch_size=batch_size,
        shuffle=split == "train" if shuffle is None else shuffle, repeat=repeat,
        augment=augment, drop_remainder=drop_remainder, seed=seed, batched=batched)
    if not with_info:
        return dataset
    kinds = {detection_name: ("detection", coco["class_names"]),
             segmentation_name: ("segmentation", ("background",) + coco["class_names"])}
    kinds.update({name: ("classification", names) for name, (_, names) in labels.items()})
    info = DatasetInfo(
        tasks={name: kinds[name] for name in keep}, category_ids=coco["category_ids"],
        bounding_box_format=bounding_box_format, ignore_index=ignore_index, image_size=size,
        num_examples=len(picked), source=f"COCO {annotations_file} + {images_dir}")
    return dataset, info
