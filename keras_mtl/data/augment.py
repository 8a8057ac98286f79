"""Joint augmentation: images, boxes and masks moved by the same random transform.

Built from Keras 3 augmentation layers (`keras.layers.RandomFlip`,
`RandomZoom`, `RandomTranslation`, `RandomBrightness`, `RandomContrast`,
`RandomSaturation`), which transform `{"images", "bounding_boxes",
"segmentation_masks"}` dicts together, inside a `tf.data` map. This module
adapts the data contract to those dicts and back, and fixes what the layers
leave to the caller:

- several detection or segmentation tasks in one batch (their boxes are
  concatenated, their masks stacked as channels, then split again);
- dtypes: the layers return float labels and masks; they are cast back;
- the area outside a zoomed-out or shifted image: masks get
  `mask_fill_value` there (background by default, or a task's
  `ignore_index`), never a reflection of the image;
- boxes cut down to less than `min_box_size` pixels by the crop become
  padding (zero box, label -1), like those the layers drop themselves.

`keras.layers.RandomCrop` is not used: Keras 3.15.1 mis-moves boxes with it
(keras#23518). Scale jitter is `RandomZoom` (about the centre) followed by
`RandomTranslation`, which together give a random scale and crop.

Example (tracing the augmentation layers into the `tf.data` map takes seconds):

```python
from keras_mtl.data import augment, shapes
augmentation = augment.JointAugmentation(detection="objects", segmentation="mask")
ds = shapes.make_dataset(8, image_size=32).map(augmentation)
images, targets = next(iter(ds))
images.dtype, targets["mask"].dtype
# (tf.float32, tf.int32)
```
"""

import keras
import tensorflow as tf

_ZOOM_LIMIT = 0.5  # RandomZoom factors lie in (-1, 1]: magnification > 0.5


def _as_tuple(names):
    if names is None:
        return ()
    if isinstance(names, str):
        return (names,)
    return tuple(names)


class JointAugmentation:
    """Random flip, scale/crop and colour, applied consistently to every target.

    Call it on a batch (or a single example) in the data contract:
    `(images, targets)` or `(images, targets, sample_weights)`; it returns the
    same structure. Images come back float32 in 0..255; boxes, labels and
    masks keep their dtypes; other targets (image-level classes) and sample
    weights pass through. Random draws differ per image of a batch.

    Args:
        detection: name(s) of the detection targets to move (dicts
            `{"boxes", "labels"}`), all in `bounding_box_format`.
        segmentation: name(s) of the mask targets to move (`(B, H, W)` or
            `(B, H, W, 1)` int class maps).
        bounding_box_format: format of the boxes (a `keras.utils.bounding_boxes`
            name; pixels, e.g. `"xyxy"`, or relative, e.g. `"rel_yxyx"`).
        horizontal_flip: flip left-right with probability 1/2.
        vertical_flip: flip upside-down with probability 1/2.
        scale_range: `(low, high)` magnification of the content, both > 0.5;
            `(1, 1)` disables scale jitter. Above 1 zooms in (crops), below 1
            zooms out (the image shrinks in a border of `fill_value`).
        translate: largest shift, a fraction of the image size; 0 disables.
        brightness: `keras.layers.RandomBrightness` factor (fraction of the
            value range); 0 disables.
        contrast: `keras.layers.RandomContrast` factor; 0 disables.
        saturation: saturation change; the factor of
            `keras.layers.RandomSaturation` is drawn in `0.5 +- saturation`
            (0.5 = unchanged); 0 disables.
        fill_value: pixel value of the area outside the transformed image.
        mask_fill_value: mask value there: 0 (background) by default; the
            task's `ignore_index` (e.g. 255) to leave it unlabelled.
        min_box_size: boxes narrower or lower than this many pixels after
            the transform become padding.
        seed: optional int seed of the layers.

    Example:

    ```python
    augmentation = JointAugmentation.from_tasks(model.tasks, scale_range=(0.7, 1.4))
    train = train.map(augmentation, num_parallel_calls=tf.data.AUTOTUNE)
    ```
    """

    def __init__(self, detection=None, segmentation=None, bounding_box_format="xyxy",
                 horizontal_flip=True, vertical_flip=False, scale_range=(0.75, 1.33),
                 translate=0.1, brightness=0.2, contrast=0.2, saturation=0.1, fill_value=0.0,
                 mask_fill_value=0, min_box_size=2.0, seed=None):
        self.detection = _as_tuple(detection)
        self.segmentation = _as_tuple(segmentation)
        self.bounding_box_format = bounding_box_format
        low, high = (float(v) for v in scale_range)
        if not _ZOOM_LIMIT < low <= high:
            raise ValueError(
                f"scale_range must be (low, high) with 0.5 < low <= high, got {scale_range}."
            )
        if not 0.0 <= translate < 1.0:
            raise ValueError(f"translate must be in [0, 1), got {translate}.")
        self.config = dict(
            horizontal_flip=bool(horizontal_flip), vertical_flip=bool(vertical_flip),
            scale_range=(low, high), translate=float(translate), brightness=float(brightness),
            contrast=float(contrast), saturation=float(saturation), fill_value=float(fill_value),
            mask_fill_value=int(mask_fill_value), min_box_size=float(min_box_size), seed=seed,
        )
        self.geometric = self._geometric_layers()
        self.colour = self._colour_layers()

    @classmethod
    def from_tasks(cls, tasks, **kwargs):
        """Builds it for a list of `keras_mtl.tasks.Task`: finds their
        detection and segmentation targets and the box format."""
        from keras_mtl.tasks.detection import Detection
        from keras_mtl.tasks.segmentation import Segmentation

        detection = [t for t in tasks if isinstance(t, Detection)]
        formats = sorted({t.bounding_box_format for t in detection})
        if len(formats) > 1:
            raise ValueError(f"The detection tasks use different box formats {formats}; "
                             "augment them with one format.")
        if formats:
            kwargs.setdefault("bounding_box_format", formats[0])
        return cls(detection=[t.name for t in detection],
                   segmentation=[t.name for t in tasks if isinstance(t, Segmentation)], **kwargs)

    # --- layers ------------------------------------------------------------------
    def _geometric_layers(self):
        c, fmt = self.config, self.bounding_box_format
        layers = []
        mode = ("horizontal_and_vertical" if c["horizontal_flip"] and c["vertical_flip"]
                else "horizontal" if c["horizontal_flip"]
                else "vertical" if c["vertical_flip"] else None)
        if mode:
            layers.append(keras.layers.RandomFlip(mode, bounding_box_format=fmt, seed=c["seed"]))
        low, high = c["scale_range"]
        if (low, high) != (1.0, 1.0):
            # RandomZoom samples z = 1 + factor; content is magnified by 1 / z.
            factor = (1.0 / high - 1.0, 1.0 / low - 1.0)
            layers.append(keras.layers.RandomZoom(
                factor, fill_mode="constant", fill_value=0.0, interpolation="bilinear",
                bounding_box_format=fmt, seed=c["seed"]))
        if c["translate"]:
            t = c["translate"]
            layers.append(keras.layers.RandomTranslation(
                (-t, t), (-t, t), fill_mode="constant", fill_value=0.0,
                interpolation="bilinear", bounding_box_format=fmt, seed=c["seed"]))
        return layers

    def _colour_layers(self):
        c = self.config
        layers = []
        if c["brightness"]:
            layers.append(keras.layers.RandomBrightness(c["brightness"], value_range=(0, 255),
                                                        seed=c["seed"]))
        if c["contrast"]:
            layers.append(keras.layers.RandomContrast(c["contrast"], value_range=(0, 255),
                                                      seed=c["seed"]))
        if c["saturation"]:
            s = min(c["saturation"], 0.49)
            layers.append(keras.layers.RandomSaturation((0.5 - s, 0.5 + s), value_range=(0, 255),
                                                        seed=c["seed"]))
        return layers

    # --- call --------------------------------------------------------------------
    def __call__(self, images, targets, sample_weights=None):
        targets = dict(targets)
        missing = [n for n in self.detection + self.segmentation if n not in targets]
        if missing:
            raise ValueError(f"JointAugmentation: the targets have no {missing}; they have "
                             f"{sorted(targets)}.")
        images = tf.convert_to_tensor(images)
        batched = images.shape.rank == 4
        # Pixels 0 mark "outside the image" for the masks: the images are offset by +1
        # likewise so the fill (0) is told apart, then shifted back.
        data = {"images": tf.cast(images, tf.float32) + 1.0}
        if self.detection:
            data["bounding_boxes"], box_counts = self._join_boxes(targets)
        if self.segmentation:
            data["segmentation_masks"], mask_info = self._join_masks(targets, batched)
        for layer in self.geometric:
            data = layer(data)
        outside = data["images"] <= 0.0  # filled, not image
        out_images = tf.where(outside, self.config["fill_value"], data["images"] - 1.0)
        out_images = tf.clip_by_value(out_images, 0.0, 255.0)
        for layer in self.colour:
            out_images = layer(out_images)
        out_images = tf.clip_by_value(out_images, 0.0, 255.0)
        if self.detection:
            height, width = images.shape[-3], images.shape[-2]
            targets.update(self._split_boxes(data["bounding_boxes"], box_counts, targets,
                                             height, width))
        if self.segmentation:
            targets.update(self._split_masks(data["segmentation_masks"], mask_info))
        if sample_weights is None:
            return out_images, targets
        return out_images, targets, sample_weights

    def _join_boxes(self, targets):
        boxes, labels, counts = [], [], []
        for name in self.detection:
            target = targets[name]
            boxes.append(tf.cast(target["boxes"], tf.float32))  # (B, N_t, 4)
            labels.append(tf.cast(target["labels"], tf.float32))  # (B, N_t)
            counts.append(int(target["boxes"].shape[-2]))
        return ({"boxes": tf.concat(boxes, axis=-2), "labels": tf.concat(labels, axis=-1)},
                counts)

    def _split_boxes(self, bounding_boxes, counts, targets, height, width):
        boxes = tf.cast(bounding_boxes["boxes"], tf.float32)  # (B, N, 4)
        labels = tf.cast(tf.round(bounding_boxes["labels"]), tf.int32)  # (B, N)
        xyxy = keras.utils.bounding_boxes.convert_format(
            boxes, self.bounding_box_format, "xyxy", height=height, width=width)
        size = tf.minimum(xyxy[..., 2] - xyxy[..., 0], xyxy[..., 3] - xyxy[..., 1])
        valid = (labels >= 0) & (size >= self.config["min_box_size"])
        labels = tf.where(valid, labels, -1)
        boxes = tf.where(valid[..., None], boxes, 0.0)
        out, start = {}, 0
        for name, count in zip(self.detection, counts):
            original = targets[name]
            out[name] = {
                **original,
                "boxes": tf.cast(boxes[..., start:start + count, :], original["boxes"].dtype),
                "labels": tf.cast(labels[..., start:start + count], original["labels"].dtype),
            }
            start += count
        return out

    def _join_masks(self, targets, batched):
        masks, info = [], []
        for name in self.segmentation:
            mask = tf.convert_to_tensor(targets[name])
            has_channel = mask.shape.rank == (4 if batched else 3)
            if not has_channel:
                mask = mask[..., None]
            info.append((name, mask.dtype, has_channel))
            masks.append(tf.cast(mask, tf.float32) + 1.0)  # 0 = outside after the transform
        return tf.concat(masks, axis=-1), info

    def _split_masks(self, masks, info):
        out = {}
        masks = tf.cast(tf.round(masks), tf.int32)  # (B, H, W, M)
        for index, (name, dtype, has_channel) in enumerate(info):
            mask = masks[..., index:index + 1]
            mask = tf.where(mask <= 0, self.config["mask_fill_value"], mask - 1)
            out[name] = tf.cast(mask if has_channel else mask[..., 0], dtype)
        return out

    def get_config(self):
        return {"detection": list(self.detection), "segmentation": list(self.segmentation),
                "bounding_box_format": self.bounding_box_format,
                **{k: (list(v) if isinstance(v, tuple) else v) for k, v in self.config.items()}}

    def __repr__(self):
        return f"JointAugmentation({self.get_config()})"
