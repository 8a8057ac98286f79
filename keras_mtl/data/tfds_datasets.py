"""TensorFlow Datasets loaders in the data contract: Oxford-IIIT Pet, PASCAL VOC, COCO.

Each `load_*` function reads a prepared TFDS data set, resizes every image
to a square `image_size` (aspect ratio not kept; boxes scaled with it, masks
resized with nearest neighbour) and yields `(images, targets,
sample_weights)` batches keyed by the task names of the matching `*_tasks()`
helper. TFDS boxes (normalised `[ymin, xmin, ymax, xmax]`) become `"xyxy"`
pixels of the resized image, padded to `max_boxes` with label -1.

| loader | tasks (names) |
|---|---|
| `load_oxford_pets` | `breed` (37 classes), `species` (2), `head` (detection, 1 class), `trimap` (segmentation: 0 background, 1 pet, 2 border) |
| `load_voc` (`"2007"`, `"2012"`) | `labels` (20, multi-label, from the objects), `objects` (detection, 20) |
| `load_coco` (`"2017"`) | `labels` (80, multi-label), `objects` (detection, 80) |

Unlabelled parts get sample weight 0: Oxford pets' test images have no
head box (TFDS stores an empty box), so their `head` weight is 0 rather than
teaching "no head here". VOC "difficult" and COCO "crowd" boxes become
padding (`skip_difficult`, as in the VOC and COCO evaluations).

TFDS must have prepared the data first (`tfds build NAME` or
`tfds.builder(NAME).download_and_prepare()` on a machine with internet,
then copy `~/tensorflow_datasets` or pass `data_dir=`). With
`download=False` (the default) a missing data set raises
`DataNotPreparedError` at once, with those instructions; with
`download=True` TFDS tries to download it (minutes of retries offline).
`tensorflow_datasets` is imported only when a loader runs.

Example (needs the prepared data set, and the network for the ImageNet weights):

```python
from keras_mtl.data import tfds_datasets
train = tfds_datasets.load_oxford_pets("train[:85%]", image_size=128, data_dir="~/tfds")
model = keras_mtl.build_mtl(tfds_datasets.pets_tasks(), trunk="resnet50")
```
"""

import os

import tensorflow as tf

from keras_mtl.data import pipeline

PETS_TASK_NAMES = {"breed": "breed", "species": "species", "head": "head", "trimap": "trimap"}
TRIMAP_NAMES = ("background", "pet", "border")
SPECIES_NAMES = ("cat", "dog")
VOC_CLASS_NAMES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
NUM_COCO_CLASSES = 80
DETECTION_TASK_NAMES = {"multi_label": "labels", "detection": "objects"}

# TFDS trimap values 1 (pet), 2 (background), 3 (border) -> class ids 1, 0, 2.
_TRIMAP_TO_CLASS = (0, 1, 0, 2)


class DataNotPreparedError(FileNotFoundError):
    """A TFDS data set is not prepared (downloaded and converted) on this machine."""


def _how_to_prepare(name, data_dir):
    where = data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
    return (
        f"The TFDS data set '{name}' is not prepared in {where}. Prepare it once on a machine "
        f"with internet: `pip install tensorflow-datasets` then `tfds build {name} "
        f"--data_dir {where}` (or `tfds.builder('{name}', data_dir=...).download_and_prepare()`; "
        "some data sets need a manual download, see the TFDS catalogue), copy the folder here "
        "and pass data_dir=, or call this loader with download=True where the network is "
        "reachable."
    )


def tfds_load(name, split, data_dir=None, download=False, shuffle_files=False):
    """`tfds.load` of the feature dicts of one split, with a clear error.

    Args:
        name: TFDS name, e.g. `"oxford_iiit_pet"`, `"voc/2007"`, `"coco/2017"`.
        split: TFDS split, e.g. `"train"`, `"train[:90%]"`.
        data_dir: TFDS data folder (default `$TFDS_DATA_DIR` or
            `~/tensorflow_datasets`).
        download: let TFDS download and prepare the data if missing.
        shuffle_files: shuffle the order of the record files.

    Returns:
        A `tf.data.Dataset` of feature dicts.

    Raises:
        DataNotPreparedError: the data set is not prepared (and
            `download=False`), or downloading it failed.
        ImportError: `tensorflow_datasets` (or `importlib_resources`) is
            not installed.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "The TFDS loaders need `pip install tensorflow-datasets importlib_resources` "
            "(or keras_mtl[data])."
        ) from error
    if data_dir is not None:
        data_dir = os.path.expanduser(data_dir)
    try:
        return tfds.load(name, split=split, data_dir=data_dir, download=download,
                         shuffle_files=shuffle_files)
    except AssertionError as error:  # TFDS: "could not find data in ..."
        if "could not find data" in str(error) or "download_and_prepare" in str(error):
            raise DataNotPreparedError(_how_to_prepare(name, data_dir)) from error
        raise
    except Exception as error:  # download or preparation failed
        if download and not isinstance(error, (ValueError, TypeError, KeyError)):
            raise DataNotPreparedError(
                f"Downloading '{name}' failed ({type(error).__name__}: {error}). "
                + _how_to_prepare(name, data_dir)) from error
        raise


# --- per-example conversion (pure TensorFlow, usable in Dataset.map) --------------------
def _resize_image(image, image_size):
    image = tf.image.resize(image[..., :3], (image_size, image_size), method="bilinear",
                            antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)  # (S, S, 3)


def _tfds_boxes_to_pixels(bbox, image_size):
    """`(N, 4)` normalised [ymin, xmin, ymax, xmax] -> xyxy pixels of the square image."""
    bbox = tf.clip_by_value(tf.cast(bbox, tf.float32), 0.0, 1.0)
    return tf.stack([bbox[:, 1], bbox[:, 0], bbox[:, 3], bbox[:, 2]], axis=-1) * image_size


def _pad_boxes(boxes, labels, max_boxes):
    """Keeps the first `max_boxes`; pads with zero boxes and label -1."""
    boxes = boxes[:max_boxes]
    labels = tf.cast(labels[:max_boxes], tf.int32)
    pad = max_boxes - tf.shape(labels)[0]
    boxes = tf.pad(boxes, [[0, pad], [0, 0]])
    labels = tf.pad(labels, [[0, pad]], constant_values=-1)
    return {"boxes": tf.ensure_shape(boxes, (max_boxes, 4)),
            "labels": tf.ensure_shape(labels, (max_boxes,))}


def _multi_hot(labels, num_classes):
    """`(N,)` class ids -> `(C,)` int32 0/1 (all zeros when N = 0)."""
    hot = tf.one_hot(tf.reshape(tf.cast(labels, tf.int32), (-1,)), num_classes, dtype=tf.int32)
    return tf.ensure_shape(tf.minimum(tf.reduce_sum(hot, axis=0), 1), (num_classes,))


def pets_example(features, image_size=224):
    """One `oxford_iiit_pet` feature dict -> `(image, targets, sample_weights)`.

    Targets: `breed` `()` int32 (0..36), `species` `()` (0 cat, 1 dog),
    `head` `{"boxes": (1, 4) xyxy pixels, "labels": (1,)}`, `trimap`
    `(S, S)` uint8 (0 background, 1 pet, 2 border). The `head` weight is 0
    where TFDS has no head box (an all-zero box: the test split).
    """
    image = _resize_image(features["image"], image_size)
    bbox = tf.reshape(tf.cast(features["head_bbox"], tf.float32), (1, 4))
    has_box = tf.reduce_all(bbox[0, 2:] > bbox[0, :2])  # ymax > ymin and xmax > xmin
    head = {"boxes": _tfds_boxes_to_pixels(bbox, image_size),
            "labels": tf.where(has_box, tf.zeros((1,), tf.int32), -1)}
    trimap = tf.image.resize(features["segmentation_mask"], (image_size, image_size),
                             method="nearest")[..., 0]
    trimap = tf.gather(tf.constant(_TRIMAP_TO_CLASS, tf.uint8), tf.cast(trimap, tf.int32))
    targets = {
        PETS_TASK_NAMES["breed"]: tf.cast(features["label"], tf.int32),
        PETS_TASK_NAMES["species"]: tf.cast(features["species"], tf.int32),
        PETS_TASK_NAMES["head"]: head,
        PETS_TASK_NAMES["trimap"]: trimap,
    }
    weights = {name: tf.constant(1.0) for name in targets}
    weights[PETS_TASK_NAMES["head"]] = tf.cast(has_box, tf.float32)
    return image, targets, weights


def objects_example(features, image_size=224, num_classes=20, max_boxes=50,
                    ignore_key="is_difficult"):
    """A VOC or COCO feature dict -> `(image, targets, sample_weights)`.

    Targets: `labels` `(C,)` int32 multi-hot of the classes of all objects
    and `objects` `{"boxes": (max_boxes, 4), "labels": (max_boxes,)}`, where
    objects flagged by `ignore_key` (`"is_difficult"`, `"is_crowd"`, or
    `None`) become padding.
    """
    objects = features["objects"]
    labels = tf.cast(objects["label"], tf.int32)  # (N,)
    boxes = _tfds_boxes_to_pixels(tf.reshape(objects["bbox"], (-1, 4)), image_size)
    if ignore_key is not None and ignore_key in objects:
        labels = tf.where(tf.cast(objects[ignore_key], tf.bool), -1, labels)
    keep = labels >= 0  # ignored objects go last, then padding
    order = tf.argsort(tf.cast(~keep, tf.int32), stable=True)
    boxes = tf.where(keep[:, None], boxes, 0.0)
    targets = {
        DETECTION_TASK_NAMES["multi_label"]: _multi_hot(objects["label"], num_classes),
        DETECTION_TASK_NAMES["detection"]: _pad_boxes(tf.gather(boxes, order),
                                                      tf.gather(labels, order), max_boxes),
    }
    weights = {name: tf.constant(1.0) for name in targets}
    return _resize_image(features["image"], image_size), targets, weights


# --- loaders -----------------------------------------------------------------------------
def _pipeline(ds, convert, tasks, batch_size, shuffle, repeat, augment, drop_remainder,
              seed, cache, batched, shuffle_buffer):
    def select(image, targets, weights):
        if tasks is None:
            return image, targets, weights
        return image, {n: targets[n] for n in tasks}, {n: weights[n] for n in tasks}

    ds = ds.map(lambda features: select(*convert(features)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        ds = ds.cache()
    return pipeline.finish(ds, batch_size, shuffle_buffer=shuffle_buffer if shuffle else 0,
                           repeat=repeat, augment=augment, drop_remainder=drop_remainder,
                           seed=seed, batched=batched)


def _check_tasks(tasks, valid):
    if tasks is None:
        return None
    unknown = [n for n in tasks if n not in valid]
    if unknown:
        raise ValueError(f"Unknown task name(s) {unknown}; valid names are {list(valid)}.")
    return list(tasks)


def load_oxford_pets(split="train", image_size=224, batch_size=32, data_dir=None,
                     download=False, shuffle=None, repeat=False, augment=None,
                     drop_remainder=False, seed=0, cache=False, tasks=None, batched=True,
                     shuffle_buffer=1024):
    """Oxford-IIIT Pet (TFDS `oxford_iiit_pet` 4.x): breeds, species, head boxes, trimaps.

    Parkhi et al., "Cats and Dogs", CVPR 2012. TFDS splits: `"train"`
    (3680 images, with head boxes) and `"test"` (3669, no head boxes: their
    `head` weight is 0). Hold out a slice of `"train"` to validate
    detection, e.g. `"train[:85%]"` / `"train[85%:]"`.

    Args:
        split: a TFDS split string.
        image_size: side of the square images (a multiple of 32 for a model).
        batch_size: examples per batch.
        data_dir: TFDS data folder.
        download: let TFDS download the data if missing (needs internet).
        shuffle: default: for splits starting with `"train"`.
        repeat: repeat forever.
        augment: optional callable applied to each batch, e.g.
            `JointAugmentation.from_tasks(pets_tasks())`.
        drop_remainder: drop the last, smaller batch.
        seed: shuffle seed.
        cache: keep the resized examples in memory after the first epoch.
        tasks: task names to keep (default all four, see `pets_tasks`).
        batched: `False` yields single examples (for `mix_datasets`).
        shuffle_buffer: examples in the shuffle buffer.

    Returns:
        A `tf.data.Dataset` of `(images, targets, sample_weights)`.

    Raises:
        DataNotPreparedError: the data set is not prepared here.
    """
    tasks = _check_tasks(tasks, PETS_TASK_NAMES.values())
    ds = tfds_load("oxford_iiit_pet", split, data_dir, download,
                   shuffle_files=split.startswith("train") if shuffle is None else shuffle)
    shuffle = split.startswith("train") if shuffle is None else shuffle
    return _pipeline(ds, lambda f: pets_example(f, image_size), tasks, batch_size, shuffle,
                     repeat, augment, drop_remainder, seed, cache, batched, shuffle_buffer)


def load_voc(year="2007", split="train", image_size=224, batch_size=32, data_dir=None,
             download=False, max_boxes=50, skip_difficult=True, shuffle=None, repeat=False,
             augment=None, drop_remainder=False, seed=0, cache=False, tasks=None, batched=True,
             shuffle_buffer=1024):
    """PASCAL VOC (TFDS `voc/2007`, `voc/2012`): multi-label classes and boxes.

    Everingham et al., IJCV 2010. Splits: `"train"`, `"validation"`,
    `"test"` (2007 only has test labels). Tasks: see `voc_tasks`.

    Args:
        year: `"2007"` or `"2012"`.
        max_boxes: boxes per image after padding (VOC has at most 42).
        skip_difficult: objects marked difficult become padding.
        (others as in `load_oxford_pets`.)

    Returns:
        A `tf.data.Dataset` of `(images, targets, sample_weights)`.
    """
    if str(year) not in ("2007", "2012"):
        raise ValueError(f"VOC year must be '2007' or '2012', got {year!r}.")
    tasks = _check_tasks(tasks, DETECTION_TASK_NAMES.values())
    ds = tfds_load(f"voc/{year}", split, data_dir, download,
                   shuffle_files=split.startswith("train") if shuffle is None else shuffle)
    shuffle = split.startswith("train") if shuffle is None else shuffle
    convert = lambda f: objects_example(  # noqa: E731
        f, image_size, len(VOC_CLASS_NAMES), max_boxes,
        "is_difficult" if skip_difficult else None)
    return _pipeline(ds, convert, tasks, batch_size, shuffle, repeat, augment,
                     drop_remainder, seed, cache, batched, shuffle_buffer)


def load_coco(split="train", image_size=512, batch_size=16, data_dir=None, download=False,
              max_boxes=100, skip_crowd=True, shuffle=None, repeat=False, augment=None,
              drop_remainder=False, seed=0, cache=False, tasks=None, batched=True,
              shuffle_buffer=1024):
    """COCO 2017 detection (TFDS `coco/2017`): multi-label classes and boxes.

    Lin et al., ECCV 2014. Splits: `"train"`, `"validation"` (`"test"` has
    no labels). Tasks: see `coco_tasks`; class ids are TFDS' 0..79.

    Args:
        max_boxes: boxes per image after padding (COCO has up to 93).
        skip_crowd: crowd regions become padding.
        (others as in `load_oxford_pets`.)

    Returns:
        A `tf.data.Dataset` of `(images, targets, sample_weights)`.
    """
    tasks = _check_tasks(tasks, DETECTION_TASK_NAMES.values())
    ds = tfds_load("coco/2017", split, data_dir, download,
                   shuffle_files=split.startswith("train") if shuffle is None else shuffle)
    shuffle = split.startswith("train") if shuffle is None else shuffle
    convert = lambda f: objects_example(  # noqa: E731
        f, image_size, NUM_COCO_CLASSES, max_boxes, "is_crowd" if skip_crowd else None)
    return _pipeline(ds, convert, tasks, batch_size, shuffle, repeat, augment,
                     drop_remainder, seed, cache, batched, shuffle_buffer)


# --- tasks -------------------------------------------------------------------------------
def pets_tasks(**detection_kwargs):
    """`[Classification("breed", 37), Classification("species", 2),
    Detection("head", 1), Segmentation("trimap", 3)]`."""
    from keras_mtl import tasks

    return [
        tasks.Classification(PETS_TASK_NAMES["breed"], num_classes=37),
        tasks.Classification(PETS_TASK_NAMES["species"], num_classes=2),
        tasks.Detection(PETS_TASK_NAMES["head"], num_classes=1, **detection_kwargs),
        tasks.Segmentation(PETS_TASK_NAMES["trimap"], num_classes=len(TRIMAP_NAMES)),
    ]


def voc_tasks(**detection_kwargs):
    """`[Classification("labels", 20, multi_label=True), Detection("objects", 20)]`."""
    return _objects_tasks(len(VOC_CLASS_NAMES), detection_kwargs)


def coco_tasks(**detection_kwargs):
    """`[Classification("labels", 80, multi_label=True), Detection("objects", 80)]`."""
    return _objects_tasks(NUM_COCO_CLASSES, detection_kwargs)


def _objects_tasks(num_classes, detection_kwargs):
    from keras_mtl import tasks

    return [
        tasks.Classification(DETECTION_TASK_NAMES["multi_label"], num_classes=num_classes,
                             multi_label=True),
        tasks.Detection(DETECTION_TASK_NAMES["detection"], num_classes=num_classes,
                        feature_level=detection_kwargs.pop("feature_level", "P3"),
                        **detection_kwargs),
    ]
