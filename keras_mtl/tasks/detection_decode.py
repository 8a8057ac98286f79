"""Decoding of the `Detection` task: heatmap peaks -> boxes -> class-aware NMS -> top-K.

Pure tensor code (`keras.ops`) with static shapes, so it runs in `predict`
(XLA-compiled when the model is compiled with `jit_compile=True`), in a
`tf.function` with an unknown batch size and in an exported SavedModel.

Non-maximum suppression is Cluster-NMS (Zheng et al., "Enhancing Geometric
Factors in Model Learning and Inference for Object Detection and Instance
Segmentation", IEEE T-Cybernetics 2021): with the candidates sorted by score,
box `j` is kept iff no kept box `i < j` of its class overlaps it by more
than the IoU threshold. Iterating that rule from "all kept" reaches the same
boxes as greedy NMS (after `t` rounds the first `t` are final), usually in
2-4 rounds of one `(B, K, K)` masked max each; the IoU matrix comes from
`keras.utils.bounding_boxes.compute_iou`.

Why not TensorFlow's NMS: `tf.image.combined_non_max_suppression` does not
compile with XLA (and `predict` is XLA-compiled when the model was compiled
with `jit_compile=True`); `tf.image.non_max_suppression_padded` compiles but
took 13-30 ms for 8 images of 100 candidates on 2 CPU cores, more than the
forward pass of a small model. Measured on that machine (tiny_resnet, 64 px,
batch 8, trained weights): the whole decoding took ~2 ms in a graph (~14% of
a ~14.5 ms forward pass of a 3-task model) and ~1 ms under XLA.
"""

import keras
from keras import ops
from keras.utils import bounding_boxes

from keras_mtl.tasks.detection_targets import grid_centers


def split_outputs(y_pred, num_classes, stride):
    """Raw head output `(B, Hg, Wg, C + 4)` -> heatmap probabilities and boxes.

    Returns `(heatmap, boxes)`: `(B, Hg, Wg, C)` sigmoid scores and
    `(B, Hg*Wg, 4)` xyxy boxes in input pixels (not clipped). The last 4
    channels are the distances from each cell centre to the box's left, top,
    right and bottom sides, `softplus(raw) * stride`.
    """
    y_pred = ops.cast(y_pred, "float32")
    grid_height, grid_width = int(y_pred.shape[1]), int(y_pred.shape[2])
    heatmap = ops.sigmoid(y_pred[..., :num_classes])  # (B, Hg, Wg, C)
    distances = ops.softplus(y_pred[..., num_classes:]) * stride  # (B, Hg, Wg, 4)
    distances = ops.reshape(distances, (-1, grid_height * grid_width, 4))  # (B, HW, 4)
    return heatmap, distances_to_boxes(distances, grid_height, grid_width, stride)


def distances_to_boxes(distances, grid_height, grid_width, stride):
    """`(B, HW, 4)` (left, top, right, bottom) distances -> xyxy pixel boxes."""
    centers = grid_centers(grid_height, grid_width, stride)  # (HW, 2)
    centers = ops.concatenate([centers, centers], axis=-1)[None]  # (1, HW, 4)
    signs = ops.convert_to_tensor([-1.0, -1.0, 1.0, 1.0])
    return centers + signs * distances  # (B, HW, 4)


def gather_rows(values, index):
    """`values[b, index[b, k]]`: `(B, N, ...)` and `(B, K)` int -> `(B, K, ...)`.

    `tf.gather(batch_dims=1)` on TensorFlow (one op; `ops.take_along_axis`
    expands into ~20 in a graph, which is most of the decoding time on CPU).
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.gather(values, index, batch_dims=1)
    extra = len(values.shape) - 2
    index = ops.reshape(index, tuple(index.shape) + (1,) * extra)
    return ops.take_along_axis(values, index, axis=1)


def peak_candidates(heatmap, boxes, num_candidates, kernel_size=3):
    """The `num_candidates` best local maxima of the heatmap, best first.

    Args:
        heatmap: `(B, Hg, Wg, C)` scores.
        boxes: `(B, Hg*Wg, 4)` the box predicted at each cell.
        num_candidates: python int K (at most `Hg * Wg * C`).
        kernel_size: a score is a peak if it is the max of its
            `kernel_size` x `kernel_size` neighbourhood in its class.

    Returns:
        `(boxes, scores, classes)`: `(B, K, 4)`, `(B, K)` sorted
        descending, `(B, K)` int32.
    """
    num_classes = int(heatmap.shape[-1])
    num_cells = int(heatmap.shape[1]) * int(heatmap.shape[2])
    if kernel_size > 1:
        local_max = ops.max_pool(heatmap, kernel_size, strides=1, padding="same")
        heatmap = heatmap * ops.cast(heatmap >= local_max, heatmap.dtype)  # (B, Hg, Wg, C)
    flat = ops.reshape(heatmap, (-1, num_cells * num_classes))  # (B, HW*C)
    scores, index = ops.top_k(flat, num_candidates)  # (B, K)
    index = ops.cast(index, "int32")
    cell = index // num_classes
    classes = index - cell * num_classes
    candidates = gather_rows(boxes, cell)  # (B, K, 4)
    return candidates, scores, classes


def class_aware_nms(boxes, scores, classes, iou_threshold, score_threshold):
    """Greedy class-aware NMS of score-sorted candidates, as Cluster-NMS.

    Args:
        boxes: `(B, K, 4)` xyxy boxes sorted by descending `scores`.
        scores: `(B, K)`, sorted descending.
        classes: `(B, K)` int class ids.
        iou_threshold: a box is suppressed by a kept, higher-scoring box of
            its class whose IoU with it is above this.
        score_threshold: boxes below it are dropped first.

    Returns:
        `(B, K)` bool, the kept boxes.
    """
    num = int(boxes.shape[1])
    # compute_iou works in yxyx: give it yxyx once instead of converting both arguments.
    yxyx = ops.take(boxes, ops.convert_to_tensor([1, 0, 3, 2]), axis=-1)  # (B, K, 4)
    iou = bounding_boxes.compute_iou(yxyx, yxyx, "yxyx")  # (B, K, K)
    same_class = classes[:, :, None] == classes[:, None, :]  # (B, K, K)
    earlier = ops.triu(ops.ones((num, num), "float32"), k=1) > 0  # [i, j]: i < j
    suppresses = ops.cast((iou > iou_threshold) & same_class & earlier[None], "float32")
    candidate = scores >= score_threshold  # (B, K)

    def step(keep):
        kept = ops.cast(keep, "float32")[:, :, None]  # (B, K, 1) over i
        suppressed = ops.max(suppresses * kept, axis=1) > 0  # (B, K) over j
        return candidate & ~suppressed

    def cond(keep, changed):
        return changed

    def body(keep, changed):
        new_keep = step(keep)
        return new_keep, ops.any(new_keep != keep)

    keep, _ = ops.while_loop(cond, body, (candidate, ops.convert_to_tensor(True)),
                             maximum_iterations=num)
    return keep


def select_top(boxes, scores, classes, keep, max_detections):
    """Keeps the `max_detections` best kept boxes, padded.

    Returns `(boxes, scores, classes, num_detections)`: `(B, K, 4)` (0
    beyond the detections), `(B, K)` (0 beyond), `(B, K)` int32 (-1
    beyond) and `(B,)` int32.
    """
    num = int(scores.shape[1])
    if num < max_detections:  # fewer candidates than outputs: pad with rejected ones
        pad = max_detections - num
        boxes = ops.pad(boxes, ((0, 0), (0, pad), (0, 0)))
        scores = ops.pad(scores, ((0, 0), (0, pad)))
        classes = ops.pad(classes, ((0, 0), (0, pad)))
        keep = ops.pad(keep, ((0, 0), (0, pad)), constant_values=False)
    ranked = ops.where(keep, scores, -1.0)  # (B, K')
    best, order = ops.top_k(ranked, max_detections)  # (B, K)
    valid = best >= 0.0
    rows = ops.concatenate([boxes, ops.cast(classes, boxes.dtype)[..., None]], axis=-1)
    rows = gather_rows(rows, order)  # (B, K, 5): one gather for boxes and classes
    boxes = ops.where(valid[..., None], rows[..., :4], 0.0)
    scores = ops.where(valid, best, 0.0)
    classes = ops.where(valid, ops.cast(rows[..., 4], "int32"), -1)
    num_detections = ops.sum(ops.cast(valid, "int32"), axis=1)
    return boxes, scores, ops.cast(classes, "int32"), num_detections


def decode_detections(y_pred, num_classes, stride, max_detections=100, score_threshold=0.05,
                      iou_threshold=0.5, pre_nms_topk=100, peak_kernel_size=3):
    """Raw head output -> padded detections in xyxy input pixels.

    Args:
        y_pred: `(B, Hg, Wg, C + 4)` raw head output.
        num_classes: C.
        stride: pixels per grid cell (input size = grid size * stride).
        max_detections: K, detections per image after NMS.
        score_threshold: minimum score of a detection.
        iou_threshold: class-aware NMS threshold.
        pre_nms_topk: candidates (heatmap peaks) that enter NMS.
        peak_kernel_size: neighbourhood of a heatmap peak.

    Returns:
        `(boxes, scores, classes, num_detections)`: `(B, K, 4)` xyxy pixels
        clipped to the image, `(B, K)`, `(B, K)` int32 (-1 = none),
        `(B,)` int32.
    """
    heatmap, boxes = split_outputs(y_pred, num_classes, stride)
    height = float(int(heatmap.shape[1]) * stride)
    width = float(int(heatmap.shape[2]) * stride)
    limits = ops.convert_to_tensor([width, height, width, height])
    boxes = ops.minimum(ops.maximum(boxes, 0.0), limits)  # clipped to the image
    num_peaks = int(heatmap.shape[1]) * int(heatmap.shape[2]) * num_classes
    num_candidates = min(max(int(pre_nms_topk), 1), num_peaks)
    boxes, scores, classes = peak_candidates(heatmap, boxes, num_candidates, peak_kernel_size)
    keep = class_aware_nms(boxes, scores, classes, iou_threshold, score_threshold)
    return select_top(boxes, scores, classes, keep, max_detections)
