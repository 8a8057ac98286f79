"""Drawing predictions: an image with its boxes and segmentation mask, saved as a PNG.

Matplotlib is imported inside the functions (an optional dependency) and
used through its object API with the Agg canvas: no window, no global
pyplot state, safe in scripts, tests and threads.
"""

import numpy as np


def _numpy(x):
    if x is None:
        return None
    if hasattr(x, "numpy"):
        x = x.numpy()
    return np.asarray(x)


def _display_image(image):
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


def save_prediction_png(path, image, boxes=None, labels=None, scores=None, mask=None,
                        class_names=None, bounding_box_format="xyxy", num_detections=None,
                        score_threshold=0.3, mask_class_names=None, mask_alpha=0.45,
                        title=None, scale=4.0):
    """Saves a PNG of `image` with boxes (and a segmentation mask) drawn on it.

    Args:
        path: file to write (`.png`).
        image: `(H, W, 3)` uint8, or float in 0..1 or 0..255.
        boxes: optional `(K, 4)` boxes in `bounding_box_format`, as a
            `Detection` task outputs them for one image.
        labels: optional `(K,)` int class ids; `-1` marks padding (skipped).
        scores: optional `(K,)` scores, written next to the class and used
            with `score_threshold`.
        mask: optional `(H, W)` int class map (0 = background, drawn
            transparent), e.g. a `Segmentation` output.
        class_names: optional names of the box classes.
        bounding_box_format: format of `boxes` (`keras.utils.bounding_boxes`
            names; relative formats use the image size).
        num_detections: optional count of valid boxes (the rest is padding).
        score_threshold: boxes scored below it are not drawn (a `Detection`
            task returns detections down to its own, low, `score_threshold`
            for mAP; boxes without `scores`, e.g. ground truth, are all drawn).
        mask_class_names: optional names of the mask classes, for a legend.
        mask_alpha: opacity of the mask overlay.
        title: optional title.
        scale: figure width in inches per 100 image pixels (at least 4 inches).

    Returns:
        `path`.

    Example:

    >>> image, targets = keras_mtl.data.shapes.make_example(0)
    >>> save_prediction_png("example.png", image, targets["objects"]["boxes"],
    ...                     targets["objects"]["labels"], mask=targets["mask"],
    ...                     class_names=keras_mtl.data.shapes.CLASS_NAMES)
    'example.png'
    """
    from matplotlib import colormaps, patches
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    picture = _display_image(image)
    height, width = picture.shape[:2]
    figure = Figure(figsize=(max(4.0, scale * width / 100.0),
                             max(4.0, scale * width / 100.0) * height / width))
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 1) if title is None else (0, 0, 1, 0.92))
    axes.imshow(picture, interpolation="nearest")
    axes.set_axis_off()
    if title is not None:
        figure.suptitle(title, fontsize=10)

    if mask is not None:
        mask = _numpy(mask)
        if mask.ndim == 3 and mask.shape[-1] == 1:
            mask = mask[..., 0]
        if mask.shape != (height, width):
            raise ValueError(f"mask must be (H, W) = {(height, width)}, got {mask.shape}.")
        palette = colormaps["tab10"]
        overlay = np.zeros((height, width, 4), "float32")
        for value in np.unique(mask):
            if value <= 0:
                continue
            overlay[mask == value] = (*palette(int(value - 1) % 10)[:3], mask_alpha)
        axes.imshow(overlay, interpolation="nearest")
        if mask_class_names is not None:
            handles = [patches.Patch(color=palette(int(v - 1) % 10), label=mask_class_names[v])
                       for v in np.unique(mask) if 0 < v < len(mask_class_names)]
            if handles:
                axes.legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.6)

    if boxes is not None:
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
        palette = colormaps["Set1"]
        for index in range(min(count, len(boxes))):
            label = labels[index]
            if label < 0 or (scores is not None and scores[index] < score_threshold):
                continue
            x_min, y_min, x_max, y_max = boxes[index]
            colour = palette(int(label) % 9)
            axes.add_patch(patches.Rectangle((x_min - 0.5, y_min - 0.5), x_max - x_min,
                                             y_max - y_min, fill=False, edgecolor=colour,
                                             linewidth=1.5))
            text = class_names[label] if class_names is not None else str(label)
            if scores is not None:
                text = f"{text} {scores[index]:.2f}"
            axes.text(x_min - 0.5, y_min - 0.5, text, fontsize=7, color="white",
                      verticalalignment="bottom",
                      bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "edgecolor": "none"})
    axes.set_xlim(-0.5, width - 0.5)
    axes.set_ylim(height - 0.5, -0.5)
    figure.savefig(path, format="png", dpi=100)
    return path
