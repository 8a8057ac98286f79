"""Predictions drawn on their images: one image per PNG, or a gallery grid.

Both draw with `keras_mtl.plotting.drawing` (one coordinate convention, one
palette, one colour for unlabelled pixels).
"""

import numpy as np

from keras_mtl.plotting.drawing import display_image, draw_boxes, draw_image, draw_mask
from keras_mtl.plotting.figures import new_figure, save


def save_prediction_png(path, image, boxes=None, labels=None, scores=None, mask=None,
                        class_names=None, bounding_box_format="xyxy", num_detections=None,
                        score_threshold=0.3, mask_class_names=None, mask_alpha=0.45,
                        title=None, scale=4.0, ignore_index=255):
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
            transparent; `ignore_index` = unlabelled), e.g. a
            `Segmentation` output or target.
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
        ignore_index: the mask value of unlabelled pixels.

    Returns:
        `path`.

    Example:

    >>> import os, tempfile
    >>> from keras_mtl.data import shapes
    >>> image, targets = shapes.make_example(0)
    >>> path = save_prediction_png(
    ...     os.path.join(tempfile.mkdtemp(), "example.png"), image,
    ...     targets["objects"]["boxes"], targets["objects"]["labels"],
    ...     mask=targets["mask"], class_names=shapes.CLASS_NAMES)
    >>> os.path.basename(path)
    'example.png'
    """
    height, width = display_image(image).shape[:2]
    figure_width = max(4.0, scale * width / 100.0)
    figure = new_figure(figure_width, figure_width * height / width)
    axes = figure.add_axes((0, 0, 1, 1) if title is None else (0, 0, 1, 0.92))
    if title is not None:
        figure.suptitle(title, fontsize=10)
    draw_image(axes, image)
    if mask is not None:
        draw_mask(axes, mask, alpha=mask_alpha, ignore_index=ignore_index,
                  class_names=mask_class_names)
    if boxes is not None:
        draw_boxes(axes, boxes, labels, scores, class_names=class_names,
                   bounding_box_format=bounding_box_format, num_detections=num_detections,
                   score_threshold=score_threshold)
    return save(figure, path, tight_layout=False)


def _title(index, classification, predictions, ground_truth, class_names):
    lines = []
    for name in classification or []:
        names = class_names.get(name)
        if name in predictions:
            probs = predictions[name][index]
            top = int(np.argmax(probs))
            lines.append(f"{name}: {names[top] if names else top} ({probs[top]:.2f})")
        elif ground_truth is not None and name in ground_truth:
            label = int(np.asarray(ground_truth[name][index]).reshape(-1)[0])
            lines.append(f"{name}: {names[label] if names and label >= 0 else label}")
    return "\n".join(lines)


def plot_prediction_gallery(images, path, predictions=None, detection=None, segmentation=None,
                            classification=None, class_names=None, ground_truth=None,
                            score_threshold=0.3, columns=4, bounding_box_format="xyxy",
                            ignore_index=255):
    """Saves a grid of images with boxes and masks drawn on them.

    Each cell is drawn as `save_prediction_png` draws its image.

    Args:
        images: `(N, H, W, 3)` uint8, or float in 0..1 or 0..255.
        path: where to write the PNG.
        predictions: `model.predict(images)` (decoded outputs), or None.
        detection: name of the detection task to draw (`<name>_boxes`,
            `<name>_scores`, `<name>_labels`, optional
            `<name>_num_detections`).
        segmentation: name of the segmentation task to draw (a class map,
            from `predictions`, else from `ground_truth`).
        classification: name(s) of classification tasks whose top class
            goes in each title.
        class_names: optional `{task: [names]}` for titles and box labels.
        ground_truth: optional targets dict (as in the data) drawn instead of
            or, with `predictions`, next to them: true boxes dashed white.
        score_threshold: boxes scored below are not drawn.
        columns: images per row.
        bounding_box_format: format of the boxes.
        ignore_index: the mask value of unlabelled pixels.

    Returns:
        `path`.

    Example:

    >>> import os, tempfile
    >>> from keras_mtl.data import shapes
    >>> images, targets = next(iter(shapes.make_dataset(4, image_size=32, batch_size=4)))
    >>> path = plot_prediction_gallery(
    ...     images.numpy(), os.path.join(tempfile.mkdtemp(), "gallery.png"),
    ...     detection="objects", segmentation="mask",
    ...     ground_truth={"objects": {k: v.numpy() for k, v in targets["objects"].items()},
    ...                   "mask": targets["mask"].numpy()})
    >>> os.path.basename(path)
    'gallery.png'
    """
    images = np.asarray(images)
    predictions = {k: np.asarray(v) for k, v in (predictions or {}).items()}
    class_names = class_names or {}
    if isinstance(classification, str):
        classification = [classification]
    count = len(images)
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    figure = new_figure(3.0 * columns, 3.0 * rows)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    masks = predictions if segmentation in predictions else (ground_truth or {})
    truth = (ground_truth or {}).get(detection) if detection else None
    for index, axis in enumerate(axes):
        axis.set_axis_off()
        if index >= count:
            continue
        draw_image(axis, images[index])
        if segmentation and segmentation in masks:
            draw_mask(axis, masks[segmentation][index], ignore_index=ignore_index)
        if truth is not None:
            draw_boxes(axis, truth["boxes"][index], truth["labels"][index],
                       bounding_box_format=bounding_box_format, colour="white",
                       linestyle="--", show_text=False)
        if detection and f"{detection}_boxes" in predictions:
            valid = predictions.get(f"{detection}_num_detections")
            draw_boxes(axis, predictions[f"{detection}_boxes"][index],
                       predictions[f"{detection}_labels"][index],
                       predictions[f"{detection}_scores"][index],
                       class_names=class_names.get(detection),
                       bounding_box_format=bounding_box_format,
                       num_detections=None if valid is None else valid[index],
                       score_threshold=score_threshold, fontsize=6)
        title = _title(index, classification, predictions, ground_truth, class_names)
        if title:
            axis.set_title(title, fontsize=7)
    return save(figure, path)
