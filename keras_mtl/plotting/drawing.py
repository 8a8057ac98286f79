"""The one drawing convention for images, segmentation masks and boxes on an `Axes`.

`save_prediction_png` and `plot_prediction_gallery` both draw with these
functions, so a box, a class or an unlabelled pixel looks the same in both:

- Coordinates: pixel `(row, column)` covers `[column, column + 1] x
  [row, row + 1]` (the image is shown with `extent=(0, W, H, 0)`), the
  convention of `keras.utils.bounding_boxes` and of the data: an `"xyxy"`
  box `[x_min, y_min, x_max, y_max]` in pixels covers the pixels
  `x_min .. x_max - 1`, so its edges are drawn on pixel borders, with no
  half-pixel offset. `(0, 0, W, H)` outlines the whole image.
- One palette, matplotlib's `tab10`: box label `k` is drawn in colour
  `k % 10`, mask value `v > 0` in colour `(v - 1) % 10` (0 is background,
  drawn transparent), so where masks store `1 + class` (the shapes and COCO
  loaders) a class has one colour in boxes and masks.
- Unlabelled mask pixels (`ignore_index`, default 255, or any negative
  value) are drawn in one colour, `IGNORE_COLOUR` (white), at the mask
  opacity. Boxes labelled `-1` are padding and are not drawn.
"""

import numpy as np

PALETTE = "tab10"
PALETTE_SIZE = 10
IGNORE_COLOUR = (1.0, 1.0, 1.0)
BOX_LINEWIDTH = 1.5


def _numpy(x):
    if x is None:
        return None
    if hasattr(x, "numpy"):
        x = x.numpy()
    return np.asarray(x)


def _image_size(axes):
    """`(height, width)` of the image `draw_image` put on `axes` (from its limits)."""
    return int(round(axes.get_ylim()[0])), int(round(axes.get_xlim()[1]))


def class_colour(index):
    """The RGBA colour of palette entry `index` (a box label, or a mask value minus 1).

    Args:
        index: an int; taken modulo the palette size.

    Returns:
        A tuple of 4 floats in 0..1.

    Example:

    >>> class_colour(0) == class_colour(10)
    True
    """
    from matplotlib import colormaps

    return colormaps[PALETTE](int(index) % PALETTE_SIZE)


def display_image(image):
    """An image as matplotlib shows it: `(H, W, 3)` uint8, or float in 0..1.

    Args:
        image: `(H, W, 3)` or `(H, W, 1)`; uint8, or float in 0..1 or 0..255
            (a float image with a value above 1 is taken as 0..255).

    Returns:
        The `(H, W, 3)` array.

    Raises:
        ValueError: if the shape is not `(H, W, 3)` or `(H, W, 1)`.

    Example:

    >>> display_image(np.full((2, 2, 1), 255.0)).shape
    (2, 2, 3)
    >>> float(display_image(np.full((2, 2, 1), 255.0)).max())
    1.0
    """
    image = _numpy(image)
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"image must be (H, W, 3) or (H, W, 1), got shape {image.shape}.")
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    if image.dtype == np.uint8:
        return image
    image = image.astype("float32")
    if image.max(initial=0.0) > 1.0:  # 0..255 floats
        image = image / 255.0
    return np.clip(image, 0.0, 1.0)


def draw_image(axes, image):
    """Shows `image` on `axes` in pixel-border coordinates, axis lines off.

    Args:
        axes: a matplotlib `Axes`.
        image: as for `display_image`.

    Returns:
        `(height, width)` of the image.

    Example:

    >>> from keras_mtl.plotting.figures import new_figure
    >>> axes = new_figure(2.0, 2.0).subplots()
    >>> draw_image(axes, np.zeros((4, 6, 3), "uint8"))
    (4, 6)
    >>> [float(v) for v in (*axes.get_xlim(), *axes.get_ylim())]
    [0.0, 6.0, 4.0, 0.0]
    """
    picture = display_image(image)
    height, width = picture.shape[:2]
    axes.imshow(picture, extent=(0, width, height, 0), interpolation="nearest")
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)
    axes.set_axis_off()
    return height, width


def draw_mask(axes, mask, alpha=0.45, ignore_index=255, class_names=None):
    """Overlays a segmentation class map on the image drawn on `axes`.

    Args:
        axes: a matplotlib `Axes` with the image drawn by `draw_image`.
        mask: `(H, W)` or `(H, W, 1)` int class map of the image's size;
            0 = background (transparent), `ignore_index` or a negative
            value = unlabelled (`IGNORE_COLOUR`).
        alpha: opacity of the overlay.
        ignore_index: the value of unlabelled pixels.
        class_names: optional names of the mask values (index 0 =
            background), for a legend.

    Raises:
        ValueError: if the mask's size is not the image's.

    Example:

    >>> from keras_mtl.plotting.figures import new_figure
    >>> axes = new_figure(2.0, 2.0).subplots()
    >>> draw_image(axes, np.zeros((2, 2, 3), "uint8"))
    (2, 2)
    >>> draw_mask(axes, np.array([[0, 1], [255, 2]]))
    """
    from matplotlib import patches

    mask = _numpy(mask)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    height, width = _image_size(axes)
    if mask.shape != (height, width):
        raise ValueError(f"mask must be (H, W) = {(height, width)}, got {mask.shape}.")
    ignored = (mask == ignore_index) | (mask < 0)
    overlay = np.zeros((height, width, 4), "float32")
    overlay[ignored] = (*IGNORE_COLOUR, alpha)
    values = [int(v) for v in np.unique(mask[~ignored]) if v > 0]
    for value in values:
        overlay[mask == value] = (*class_colour(value - 1)[:3], alpha)
    axes.imshow(overlay, extent=(0, width, height, 0), interpolation="nearest")
    if class_names is not None:
        handles = [patches.Patch(color=class_colour(v - 1), label=class_names[v])
                   for v in values if v < len(class_names)]
        if ignored.any():
            handles.append(patches.Patch(color=IGNORE_COLOUR, label="unlabelled"))
        if handles:
            axes.legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.6)


def draw_boxes(axes, boxes, labels=None, scores=None, class_names=None,
               bounding_box_format="xyxy", num_detections=None, score_threshold=0.3,
               colour=None, linestyle="-", show_text=True, fontsize=7):
    """Draws boxes on the image drawn on `axes`, with their class and score.

    Args:
        axes: a matplotlib `Axes` with the image drawn by `draw_image`.
        boxes: `(K, 4)` boxes in `bounding_box_format` (names of
            `keras.utils.bounding_boxes`; relative formats use the image size).
        labels: optional `(K,)` int class ids (default all 0); `-1` marks
            padding (not drawn).
        scores: optional `(K,)` scores, written next to the class and
            compared with `score_threshold` (boxes without scores, e.g. the
            ground truth, are all drawn).
        class_names: optional names of the box classes.
        bounding_box_format: the format of `boxes`.
        num_detections: optional count of valid boxes (the rest is padding).
        score_threshold: boxes scored below it are not drawn.
        colour: one colour for every box (e.g. `"white"` for the ground
            truth); default the palette colour of each label.
        linestyle: the matplotlib line style of the edges.
        show_text: write the class (and score) above each box.
        fontsize: size of that text.

    Returns:
        The number of boxes drawn.

    Example:

    >>> from keras_mtl.plotting.figures import new_figure
    >>> axes = new_figure(2.0, 2.0).subplots()
    >>> draw_image(axes, np.zeros((16, 16, 3), "uint8"))
    (16, 16)
    >>> draw_boxes(axes, [[2, 2, 10, 8], [0, 0, 0, 0]], labels=[1, -1])
    1
    """
    from matplotlib import patches

    height, width = _image_size(axes)
    boxes = _numpy(boxes).reshape(-1, 4).astype("float32")
    count = len(boxes) if num_detections is None else int(_numpy(num_detections))
    labels = (np.zeros(len(boxes), int) if labels is None
              else _numpy(labels).reshape(-1).astype(int))
    scores = None if scores is None else _numpy(scores).reshape(-1)
    if len(boxes) and bounding_box_format != "xyxy":
        from keras import ops
        from keras.utils import bounding_boxes

        boxes = ops.convert_to_numpy(bounding_boxes.convert_format(
            boxes, bounding_box_format, "xyxy", height=height, width=width))
    drawn = 0
    for index in range(min(count, len(boxes))):
        label = labels[index]
        if label < 0 or (scores is not None and scores[index] < score_threshold):
            continue
        x_min, y_min, x_max, y_max = (float(v) for v in boxes[index])
        edge = class_colour(label) if colour is None else colour
        axes.add_patch(patches.Rectangle((x_min, y_min), x_max - x_min, y_max - y_min,
                                         fill=False, edgecolor=edge, linestyle=linestyle,
                                         linewidth=BOX_LINEWIDTH))
        drawn += 1
        if not show_text:
            continue
        text = class_names[label] if class_names is not None else str(label)
        if scores is not None:
            text = f"{text} {scores[index]:.2f}"
        axes.text(x_min, y_min, text, fontsize=fontsize, color="white",
                  verticalalignment="bottom",
                  bbox={"facecolor": edge, "alpha": 0.8, "pad": 1, "edgecolor": "none"})
    return drawn
