"""Folder data of your own: images, mask PNGs of class ids, and a CSV of image labels.

    IMAGES_DIR/NAME.jpg            photos (PNG, JPEG, BMP or GIF)
    MASKS_DIR/NAME{suffix}.png     optional: one grey PNG per photo, the same size,
                                   pixel = class id (0 = background), 255 = unlabelled
    LABELS.csv                     optional: file_name,<label>,<label>,...

It becomes a segmentation task (`segmentation_name`, default `"mask"`) and
one classification task per CSV column (named by its header; class names
numbered in sorted order, integer labels used as ids, empty cells -1).
A photo without a mask file is unlabelled for segmentation (all
`ignore_index`), one without a CSV row is unlabelled for the labels.
Examples are decoded, resized (`"letterbox"` keeps the aspect ratio) and
kept in memory, as in `keras_mtl.data.coco`. Bad data raises `DataError`
naming the file: a missing, empty or corrupt image, a CSV row or a mask
without its image, a mask of the wrong size or with a class id out of range.

Example:

```python
train, info = folder.load_image_folder("photos", masks_dir="masks", labels_csv="labels.csv",
                                       split="train", image_size=128, with_info=True)
[(t.name, t.num_classes) for t in info.make_tasks()]   # [('weather', 3), ('mask', 4)]
```
"""

import os

import numpy as np

from keras_mtl.data import files, letterbox, pipeline
from keras_mtl.data.files import DataError
from keras_mtl.data.info import DatasetInfo
from keras_mtl.data.splits import split_names

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def list_images(images_dir):
    """Sorted file names of the images in `images_dir` (not recursive).

    Raises:
        DataError: the folder does not exist or holds no image.
    """
    if not os.path.isdir(images_dir):
        raise DataError(f"Images folder {images_dir!r} does not exist.")
    names = sorted(f for f in os.listdir(images_dir) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise DataError(f"Images folder {images_dir!r} holds no {'/'.join(IMAGE_EXTENSIONS)} "
                        "file.")
    return names


def _mask_paths(names, masks_dir, mask_suffix):
    """`{image file name: mask path or None}`; a mask without its image is an error."""
    expected = {os.path.splitext(name)[0] + mask_suffix + ".png": name for name in names}
    found = sorted(f for f in os.listdir(masks_dir) if f.lower().endswith(".png"))
    orphans = [f for f in found if f not in expected]
    if orphans:
        raise DataError(f"Mask {os.path.join(masks_dir, orphans[0])!r} has no image in the "
                        f"images folder (expected NAME{mask_suffix}.png for an image NAME.*).")
    if not found:
        raise DataError(f"Masks folder {masks_dir!r} holds no PNG file.")
    present = set(found)
    return {name: (os.path.join(masks_dir, mask) if mask in present else None)
            for mask, name in expected.items()}


def _csv_labels(names, images_dir, labels_csv):
    """`{column: ((I,) int32 ids, class names)}` for the images `names`."""
    columns, rows = files.read_labels_csv(labels_csv)
    by_stem = {os.path.splitext(name)[0]: name for name in names}
    matched = {}
    for key, row in rows.items():
        name = key if key in names else by_stem.get(key)
        if name is None:
            raise DataError(f"Image {os.path.join(images_dir, key)!r} (listed in "
                            f"{labels_csv!r}) does not exist.")
        matched[name] = row
    return {column: files.class_ids([matched.get(n, {}).get(column) for n in names],
                                    f"Labels CSV {labels_csv!r}, column {column!r}")
            for column in columns}


def folder_example(image_path, mask_path, image_size, resize="letterbox", num_classes=None,
                   ignore_index=255, with_mask=True):
    """Reads, checks and resizes one image and its mask.

    Args:
        image_path: the image file.
        mask_path: its mask PNG, or None (unlabelled).
        image_size: `(height, width)` of the result.
        resize: `"letterbox"` or `"stretch"`.
        num_classes: class ids must be below it (or equal `ignore_index`).
        ignore_index: mask value of unlabelled pixels and the letterbox border.
        with_mask: make the mask at all.

    Returns:
        `(image (h, w, 3) uint8, mask (h, w) uint8 or None)`.

    Raises:
        DataError: a bad image or mask, naming the file.
    """
    image = files.read_image(image_path)  # (H, W, 3)
    mask = None
    if with_mask:
        if mask_path is None:
            mask = np.full(image.shape[:2], ignore_index, "uint8")  # unlabelled
        else:
            mask = files.read_mask(mask_path, image.shape[:2], image_path)  # (H, W)
            bad = (mask >= (num_classes or 256)) & (mask != ignore_index)  # (H, W)
            if bad.any():
                raise DataError(f"Mask {mask_path!r} has class id {int(mask[bad].max())}; ids "
                                f"must be below {num_classes} or be {ignore_index} "
                                "(unlabelled).")
            mask = mask.astype("uint8")
    resized, _, mask = letterbox.resize_example(image, image_size, resize, mask=mask,
                                                mask_pad_value=ignore_index)
    return resized, mask


def _num_classes(mask_paths, class_names, ignore_index):
    if class_names is not None:
        return len(class_names)
    largest = 0
    for path in mask_paths:
        values = np.unique(files.read_mask(path))
        values = values[values != ignore_index]
        largest = max([largest] + [int(v) for v in values])
    if largest >= 255:
        raise DataError(f"Masks in {os.path.dirname(mask_paths[0])!r} use class ids up to "
                        f"{largest}; at most 254 classes fit besides 255 (unlabelled).")
    return max(2, largest + 1)


def load_image_folder(images_dir, masks_dir=None, labels_csv=None, split="all", image_size=128,
                      batch_size=8, resize="letterbox", tasks=None, mask_suffix="",
                      segmentation_name="mask", class_names=None, ignore_index=255,
                      shuffle=None, repeat=False, augment=None, drop_remainder=False, seed=0,
                      val_every=5, fold=0, batched=True, with_info=False):
    """A `tf.data` pipeline of an image folder with masks and/or a labels CSV.

    Args:
        images_dir: the folder of images.
        masks_dir: optional folder of mask PNGs (`NAME{mask_suffix}.png`).
        labels_csv: optional CSV of image-level labels.
        split: `"all"`, `"train"` or `"val"` (every `val_every`-th image in
            file-name order validates; see `keras_mtl.data.splits`).
        image_size: `S` or `(height, width)` of the examples.
        batch_size: examples per batch.
        resize: `"letterbox"` (keep the aspect ratio, pad) or `"stretch"`.
        tasks: task names to keep (default all: the CSV columns, then
            `segmentation_name` when `masks_dir` is given).
        mask_suffix: what follows the image's stem in a mask's name, e.g. `"_mask"`.
        segmentation_name: the name of the segmentation task.
        class_names: the segmentation classes (class 0 first); default
            `"0", "1", ...` up to the largest id in the masks.
        ignore_index: the mask value of unlabelled pixels.
        shuffle: default: only for `"train"`.
        repeat, augment, drop_remainder, seed, batched: as
            `keras_mtl.data.pipeline.from_arrays`.
        val_every, fold: the split.
        with_info: also return a `DatasetInfo`.

    Returns:
        A `tf.data.Dataset` of `(images, targets)` (images `(B, h, w, 3)`
        uint8, masks `(B, h, w)` uint8, labels `(B,)` int32), or
        `(dataset, info)` with `with_info=True`.

    Raises:
        DataError: bad data, naming the file.
        ValueError: neither masks nor labels, an unknown task, split or
            resize mode.
    """
    size = letterbox.image_size_pair(image_size)
    letterbox.check_mode(resize)
    if masks_dir is None and labels_csv is None:
        raise ValueError("load_image_folder needs masks_dir and/or labels_csv (the labels).")
    names = list_images(images_dir)
    labels = _csv_labels(names, images_dir, labels_csv) if labels_csv else {}
    masks = {}
    if masks_dir is not None:
        if not os.path.isdir(masks_dir):
            raise DataError(f"Masks folder {masks_dir!r} does not exist.")
        masks = _mask_paths(names, masks_dir, mask_suffix)
    available = list(labels) + ([segmentation_name] if masks_dir is not None else [])
    if len(set(available)) != len(available):
        raise ValueError(f"The CSV column {segmentation_name!r} clashes with the segmentation "
                         "task's name; pass another segmentation_name.")
    keep = pipeline.select_tasks(available, tasks)
    with_mask = segmentation_name in keep
    num_classes = (_num_classes([p for p in masks.values() if p], class_names, ignore_index)
                   if with_mask else 0)
    chosen = split_names(names, split, val_every, fold)
    picked = [names.index(name) for name in chosen]
    if not picked:
        raise DataError(f"Images folder {images_dir!r}: split {split!r} has no image.")
    examples = [folder_example(os.path.join(images_dir, names[i]), masks.get(names[i]), size,
                               resize, num_classes, ignore_index, with_mask) for i in picked]
    targets = {name: ids[picked] for name, (ids, _) in labels.items() if name in keep}
    if with_mask:
        targets[segmentation_name] = np.stack([mask for _, mask in examples])  # (I, h, w)
    images = np.stack([image for image, _ in examples])  # (I, h, w, 3)
    dataset = pipeline.from_arrays(
        images, {name: targets[name] for name in keep}, batch_size=batch_size,
        shuffle=split == "train" if shuffle is None else shuffle, repeat=repeat,
        augment=augment, drop_remainder=drop_remainder, seed=seed, batched=batched)
    if not with_info:
        return dataset
    kinds = {name: ("classification", class_names_) for name, (_, class_names_)
             in labels.items()}
    kinds[segmentation_name] = ("segmentation", tuple(
        class_names or [str(i) for i in range(num_classes)]))
    info = DatasetInfo(tasks={name: kinds[name] for name in keep}, ignore_index=ignore_index,
                       image_size=size, num_examples=len(picked),
                       source=f"folder {images_dir}" + (f" + {masks_dir}" if masks_dir else ""))
    return dataset, info
