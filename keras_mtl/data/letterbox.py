"""Resizing one example to a fixed size, its boxes and mask moved with the image.

`keras.layers.Resizing` does the work: it resizes the image (bilinear,
antialiased), the boxes and the mask (nearest neighbour) with the same
geometry. Two modes:

- `"letterbox"`: keeps the aspect ratio; the image is scaled to fit and
  centred, the border filled with black pixels and, in the mask, with
  `mask_pad_value` (by default the ignore label 255: the border is not
  part of the photo, so it is neither background nor object).
- `"stretch"`: scales each axis to the size; the aspect ratio changes.

Example:

>>> image = np.zeros((50, 100, 3), "uint8")
>>> out, boxes, mask = resize_example(image, (64, 64), boxes=[[20, 10, 40, 30]],
...                                   mask=np.zeros((50, 100), "uint8"))
>>> out.shape, boxes.round(2)         # scale 0.64, 16 rows of border above
((64, 64, 3), array([[12.8, 22.4, 25.6, 35.2]], dtype=float32))
"""

import functools

import numpy as np

RESIZE_MODES = ("letterbox", "stretch")


@functools.lru_cache(maxsize=8)
def _layer(height, width, mode):
    import keras

    return keras.layers.Resizing(height, width, pad_to_aspect_ratio=mode == "letterbox",
                                 bounding_box_format="xyxy", antialias=True, fill_value=0.0)


def check_mode(mode):
    """Returns `mode` if it is one of `RESIZE_MODES`, else raises `ValueError`."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"Unknown resize mode {mode!r}; use one of {RESIZE_MODES}.")
    return mode


def image_size_pair(image_size):
    """`S` or `(H, W)` -> `(H, W)` ints, each >= 1."""
    size = (image_size, image_size) if np.ndim(image_size) == 0 else tuple(image_size)
    if len(size) != 2 or min(int(s) for s in size) < 1:
        raise ValueError(f"image_size must be an int or (height, width), got {image_size!r}.")
    return int(size[0]), int(size[1])


def resize_example(image, size, mode="letterbox", boxes=None, mask=None, mask_pad_value=255):
    """Resizes an image and, alike, its boxes and class mask.

    Args:
        image: `(H, W, 3)` uint8 array.
        size: `(height, width)` of the result.
        mode: `"letterbox"` (keep the aspect ratio, pad) or `"stretch"`.
        boxes: optional `(N, 4)` "xyxy" boxes in pixels of `image`.
        mask: optional `(H, W)` integer class ids of `image`.
        mask_pad_value: mask value of the letterbox border.

    Returns:
        `(image, boxes, mask)`: `(h, w, 3)` uint8, `(N, 4)` float32 "xyxy"
        pixels of the result (`None` without boxes) and `(h, w)` of the
        mask's dtype (`None` without a mask).

    Raises:
        ValueError: an unknown `mode`.
    """
    height, width = size
    layer = _layer(int(height), int(width), check_mode(mode))
    data = {"images": np.asarray(image, "float32")}  # (H, W, 3)
    count = 0 if boxes is None else len(boxes)
    if count:
        data["bounding_boxes"] = {"boxes": np.asarray(boxes, "float32").reshape(-1, 4),  # (N, 4)
                                  "labels": np.zeros((count,), "int32")}
    if mask is not None:  # shifted by one: 0 marks the border after resizing
        data["segmentation_masks"] = (np.asarray(mask, "float32") + 1.0)[..., None]  # (H, W, 1)
    out = layer(data)
    resized = np.clip(np.round(np.asarray(out["images"])), 0, 255).astype("uint8")  # (h, w, 3)
    new_boxes = None
    if boxes is not None:
        new_boxes = (np.asarray(out["bounding_boxes"]["boxes"], "float32") if count
                     else np.zeros((0, 4), "float32"))  # (N, 4)
    new_mask = None
    if mask is not None:
        shifted = np.round(np.asarray(out["segmentation_masks"])[..., 0])  # (h, w)
        new_mask = np.where(shifted == 0, mask_pad_value, shifted - 1).astype(np.asarray(mask).dtype)
    return resized, new_boxes, new_mask
