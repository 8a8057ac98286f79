"""Penn-Fudan pedestrians: a folder loader for real images, instance masks and boxes.

The Penn-Fudan Pedestrian Database (Wang, Shi, Song, Shen, "Object Detection
Combining Recognition and Segmentation", ACCV 2007) has 170 street photos
(96 `PennPed*` from around the University of Pennsylvania, 74 `FudanPed*`
from around Fudan University) with 345 pedestrians:

    DATA_DIR/PNGImages/NAME.png          RGB photo, sizes vary (~300-1000 px a side)
    DATA_DIR/PedMasks/NAME_mask.png      instance ids: 0 background, i = pedestrian i
    DATA_DIR/Annotation/NAME.txt         PASCAL Annotation 1.00 text, one box a pedestrian

Every image yields three targets, keyed as in `TASK_NAMES`:
- `"campus"`: image-level class from the file name, 0 = Fudan, 1 = Penn
  (`CAMPUS_NAMES`).
- `"pedestrians"`: `{"boxes": (N, 4) float32 "xyxy" pixels of the resized image,
  "labels": (N,) int32}` (label 0 = person), padded with zero boxes and label -1.
- `"person"`: `(S, S)` uint8 mask, 1 = a pedestrian pixel, 0 = background.

Images are resized to a square `image_size` (aspect ratio not kept; boxes
scaled with them, masks resized with nearest neighbour), decoded once and
kept in memory. The validation split is every fifth file in sorted name
order (34 images: 14 Fudan + 20 Penn), so both campuses are in both splits;
a contiguous split would put only Penn images in validation and make the
campus label meaningless.

Example (needs the unzipped PennFudanPed folder):

```python
from keras_mtl.data import pennfudan
train = pennfudan.load_pennfudan("../shared/data/PennFudanPed", "train", image_size=64)
images, targets = next(iter(train))
images.shape, sorted(targets)
# (TensorShape([8, 64, 64, 3]), ['campus', 'pedestrians', 'person'])
```
"""

import functools
import os
import re

import numpy as np
import tensorflow as tf

from keras_mtl.data.pipeline import from_arrays
from keras_mtl.data.splits import SPLITS, split_names  # noqa: F401 (public here too)

CAMPUS_NAMES = ("FudanPed", "PennPed")
CLASS_NAMES = ("person",)  # detection classes
MASK_CLASS_NAMES = ("background", "person")  # segmentation classes
TASK_NAMES = {"classification": "campus", "detection": "pedestrians", "segmentation": "person"}

_BOX_LINE = re.compile(
    r"Bounding box for object (\d+)[^:]*:\s*\(\s*(-?\d+)\s*,\s*(-?\d+)\s*\)\s*-\s*"
    r"\(\s*(-?\d+)\s*,\s*(-?\d+)\s*\)"
)


def parse_annotation(text):
    """Reads the boxes of a PASCAL Annotation 1.00 text file.

    The file's `(Xmin, Ymin) - (Xmax, Ymax)` are 1-based, inclusive pixel
    indices; the returned boxes are "xyxy" pixel edges in 0-based image
    coordinates: `(Xmin - 1, Ymin - 1, Xmax, Ymax)`, so a box covers its
    pixels exactly, as `keras.utils.bounding_boxes` expects.

    Args:
        text: the file's contents.

    Returns:
        `(N, 4)` float32 boxes, in the file's object order (object `i`
        matches instance id `i` of the mask).

    Raises:
        ValueError: if the text has no box line but announces objects.

    Example:

    >>> parse_annotation('Bounding box for object 1 "PASpersonWalking" '
    ...                  '(Xmin, Ymin) - (Xmax, Ymax) : (160, 182) - (302, 431)')
    array([[159., 181., 302., 431.]], dtype=float32)
    """
    found = sorted((int(m[0]), [int(v) for v in m[1:]]) for m in _BOX_LINE.findall(text))
    if not found:
        count = re.search(r"Objects with ground truth\s*:\s*(\d+)", text)
        if count and int(count.group(1)) > 0:
            raise ValueError("The annotation announces objects but has no readable box line.")
        return np.zeros((0, 4), "float32")
    boxes = np.array([coords for _, coords in found], "float32")
    boxes[:, :2] -= 1.0  # 1-based inclusive -> 0-based pixel edges
    return boxes


def list_names(data_dir):
    """Sorted example names (file stems of `PNGImages/*.png`) of a folder.

    Raises:
        FileNotFoundError: with the expected layout, if the folder is not a
            Penn-Fudan-style folder.
    """
    image_dir = os.path.join(data_dir, "PNGImages")
    missing = [sub for sub in ("PNGImages", "PedMasks", "Annotation")
               if not os.path.isdir(os.path.join(data_dir, sub))]
    if missing:
        raise FileNotFoundError(
            f"{data_dir!r} is not a Penn-Fudan-style folder: missing {missing}. Expected "
            "PNGImages/NAME.png, PedMasks/NAME_mask.png and Annotation/NAME.txt (the "
            "PennFudanPed.zip from https://www.cis.upenn.edu/~jshi/ped_html/, unzipped)."
        )
    names = sorted(f[:-4] for f in os.listdir(image_dir) if f.lower().endswith(".png"))
    if not names:
        raise FileNotFoundError(f"No PNG images in {image_dir!r}.")
    return names


def campus_label(name):
    """0 for `FudanPed*`, 1 for `PennPed*`, -1 (unlabelled) for other names."""
    for label, prefix in enumerate(CAMPUS_NAMES):
        if name.startswith(prefix):
            return label
    return -1


def _read_example(data_dir, name, image_size):
    image = tf.io.decode_png(tf.io.read_file(os.path.join(data_dir, "PNGImages", f"{name}.png")),
                             channels=3)  # (H, W, 3)
    instances = tf.io.decode_png(
        tf.io.read_file(os.path.join(data_dir, "PedMasks", f"{name}_mask.png")),
        channels=1)  # (H, W, 1) instance ids
    height, width = int(image.shape[0]), int(image.shape[1])
    if tuple(instances.shape[:2]) != (height, width):
        raise ValueError(f"{name}: mask size {tuple(instances.shape[:2])} differs from the "
                         f"image's {(height, width)}.")
    with open(os.path.join(data_dir, "Annotation", f"{name}.txt"), encoding="latin-1") as file:
        boxes = parse_annotation(file.read())  # (N, 4) original pixels
    size = (image_size, image_size)
    resized = tf.image.resize(image, size, method="area", antialias=True)
    resized = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
    person = tf.image.resize(tf.cast(instances > 0, tf.uint8), size, method="nearest")[..., 0]
    scale = np.array([image_size / width, image_size / height] * 2, "float32")
    boxes = np.clip(boxes, 0.0, [width, height, width, height]) * scale
    return resized.numpy(), person.numpy(), boxes.astype("float32")


@functools.lru_cache(maxsize=4)
def _load_arrays(data_dir, image_size):
    names = list_names(data_dir)
    examples = [_read_example(data_dir, name, image_size) for name in names]
    return names, examples


def load_arrays(data_dir, split="train", image_size=128, val_every=5, max_objects=None, fold=0):
    """Decoded, resized examples of one split as numpy arrays (cached in memory).

    Args:
        data_dir: the Penn-Fudan-style folder.
        split: `"train"`, `"val"` or `"all"` (see `split_names`).
        image_size: side of the square images, in pixels.
        val_every: every `val_every`-th sorted file is validation.
        max_objects: boxes per image after padding; default: the most in
            the folder (8 for Penn-Fudan), the same for every split.
            Images with more boxes keep the first `max_objects`.
        fold: which of the `val_every` cross-validation folds (see
            `split_names`).

    Returns:
        A dict of arrays: `"names"` (I,), `"images"` `(I, S, S, 3)` uint8,
        `"masks"` `(I, S, S)` uint8 (0/1), `"boxes"` `(I, N, 4)` float32
        xyxy pixels, `"labels"` `(I, N)` int32 (0 or -1), `"campus"` `(I,)`
        int32.
    """
    names, examples = _load_arrays(os.path.abspath(data_dir), int(image_size))
    if max_objects is None:
        max_objects = max(1, max(len(boxes) for _, _, boxes in examples))
    keep = set(split_names(names, split, val_every, fold))
    chosen = [(n, e) for n, e in zip(names, examples) if n in keep]
    count = len(chosen)
    boxes = np.zeros((count, max_objects, 4), "float32")
    labels = np.full((count, max_objects), -1, "int32")
    for index, (_, (_, _, example_boxes)) in enumerate(chosen):
        n = min(len(example_boxes), max_objects)
        boxes[index, :n] = example_boxes[:n]
        labels[index, :n] = 0
    return {
        "names": np.array([n for n, _ in chosen]),
        "images": np.stack([e[0] for _, e in chosen]),
        "masks": np.stack([e[1] for _, e in chosen]),
        "boxes": boxes,
        "labels": labels,
        "campus": np.array([campus_label(n) for n, _ in chosen], "int32"),
    }


def load_pennfudan(data_dir, split="train", image_size=128, batch_size=8, shuffle=None,
                   repeat=False, augment=None, drop_remainder=False, seed=0, val_every=5,
                   max_objects=None, tasks=None, batched=True, fold=0):
    """A `tf.data` pipeline of Penn-Fudan examples in the data contract.

    Args:
        data_dir: the folder with `PNGImages/`, `PedMasks/`, `Annotation/`.
        split: `"train"`, `"val"` (every `val_every`-th sorted file) or `"all"`.
        image_size: side of the square images; a multiple of 32 for a model.
        batch_size: examples per batch.
        shuffle: shuffle (reshuffled each epoch); default: only for `"train"`.
        repeat: repeat forever.
        augment: optional callable `(images, targets) -> (images, targets)`
            applied to each batch (e.g. `keras_mtl.data.augment.JointAugmentation`).
        drop_remainder: drop the last, smaller batch.
        seed: shuffle seed.
        val_every, fold: see `split_names`.
        max_objects: boxes per image (padding); see `load_arrays`.
        tasks: target keys to keep, a subset of `TASK_NAMES.values()`;
            default all three.
        batched: `False` yields single examples (then `batch_size`,
            `drop_remainder` and `augment` are not used), e.g. for
            `keras_mtl.data.mixing.mix_datasets`.

    Returns:
        A `tf.data.Dataset` of `(images, targets)`: images `(B, S, S, 3)`
        uint8 (float32 after `augment`), targets `{"campus": (B,) int32,
        "pedestrians": {"boxes": (B, N, 4), "labels": (B, N)}, "person":
        (B, S, S) uint8}`.

    Raises:
        FileNotFoundError: if `data_dir` is not a Penn-Fudan-style folder.
        ValueError: unknown split or task name.
    """
    valid = list(TASK_NAMES.values())
    keep = valid if tasks is None else list(tasks)
    unknown = [name for name in keep if name not in valid]
    if unknown:
        raise ValueError(f"Unknown task name(s) {unknown}; valid names are {valid}.")
    arrays = load_arrays(data_dir, split, image_size, val_every, max_objects, fold)
    targets = {
        TASK_NAMES["classification"]: arrays["campus"],
        TASK_NAMES["detection"]: {"boxes": arrays["boxes"], "labels": arrays["labels"]},
        TASK_NAMES["segmentation"]: arrays["masks"],
    }
    return from_arrays(arrays["images"], {name: targets[name] for name in keep},
                       batch_size=batch_size, shuffle=split == "train" if shuffle is None else
                       shuffle, repeat=repeat, augment=augment, drop_remainder=drop_remainder,
                       seed=seed, batched=batched)


def make_tasks(image_level="campus", detection_kwargs=None, segmentation_kwargs=None):
    """The three `keras_mtl.tasks` of this data set, named as in `TASK_NAMES`.

    Args:
        image_level: only `"campus"` for now (2 classes).
        detection_kwargs: optional arguments of `keras_mtl.tasks.Detection`.
        segmentation_kwargs: optional arguments of `keras_mtl.tasks.Segmentation`
            (e.g. `dice_weight`).

    Returns:
        `[Classification("campus", 2), Detection("pedestrians", 1),
        Segmentation("person", 2)]`.
    """
    from keras_mtl import tasks

    if image_level != "campus":
        raise ValueError(f"Unknown image-level label {image_level!r}; use 'campus'.")
    return [
        tasks.Classification(TASK_NAMES["classification"], num_classes=len(CAMPUS_NAMES)),
        tasks.Detection(TASK_NAMES["detection"], num_classes=len(CLASS_NAMES),
                        **(detection_kwargs or {})),
        tasks.Segmentation(TASK_NAMES["segmentation"], num_classes=len(MASK_CLASS_NAMES),
                           **(segmentation_kwargs or {})),
    ]


def leaderboard_factory(data_dir, image_size=96, batch_size=16, augment=True,
                        cross_validation=False, val_every=5, segmentation_kwargs=None):
    """A data factory of Penn-Fudan for `keras_mtl.evaluation.run_leaderboard`.

    Args:
        data_dir: the PennFudanPed folder.
        image_size, batch_size: of the training batches (validation: the
            same size, batches of `batch_size`).
        augment: flips, scale jitter (0.7-1.4) and translation, seeded by
            the run's seed (`JointAugmentation`).
        cross_validation: seed `s` validates on fold `s % val_every` (the
            other files train), so seeds 0-4 cover every photo once;
            otherwise every seed uses fold 0 (34 validation photos).
        val_every: the number of folds.
        segmentation_kwargs: optional arguments of the person task
            (`keras_mtl.tasks.Segmentation`, e.g. `head_convs`).

    Returns:
        `factory(seed) -> LeaderboardData` with the three tasks; delta-m
        uses campus accuracy, pedestrian mAP@.5 and mAP@[.5:.95], and the
        person class IoU, as the recipe does.
    """
    from keras_mtl.data.augment import JointAugmentation
    from keras_mtl.evaluation.leaderboard import LeaderboardData

    def factory(seed):
        fold = seed % val_every if cross_validation else 0
        tasks = make_tasks(segmentation_kwargs=segmentation_kwargs)
        transform = (JointAugmentation.from_tasks(tasks, scale_range=(0.7, 1.4), translate=0.1,
                                                  seed=seed) if augment else None)
        train = load_pennfudan(data_dir, "train", image_size=image_size, batch_size=batch_size,
                               repeat=True, drop_remainder=True, augment=transform, seed=seed,
                               val_every=val_every, fold=fold)
        validation = load_pennfudan(data_dir, "val", image_size=image_size,
                                    batch_size=batch_size, val_every=val_every, fold=fold)
        return LeaderboardData(
            tasks=tasks, train=train, validation=validation,
            input_shape=(image_size, image_size, 3),
            delta_metrics={TASK_NAMES["classification"]: ["accuracy"],
                           TASK_NAMES["detection"]: ["map50", "map"],
                           TASK_NAMES["segmentation"]: ["iou_person"]},
            class_names={TASK_NAMES["segmentation"]: MASK_CLASS_NAMES,
                         TASK_NAMES["classification"]: CAMPUS_NAMES,
                         TASK_NAMES["detection"]: CLASS_NAMES},
            name=f"pennfudan-{image_size}px-b{batch_size}-aug{int(bool(augment))}"
                 f"-cv{int(bool(cross_validation))}")

    return factory
