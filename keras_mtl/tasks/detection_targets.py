"""Target assignment of the `Detection` task: box targets -> dense training targets.

Pure tensor code (`keras.ops`), vectorised over the batch and the padded
boxes; it runs inside the (XLA-compiled) train step.

The assignment follows CenterNet (Zhou et al., "Objects as Points", 2019)
for the class heatmap and TTFNet (Liu et al., "Training-Time-Friendly Network
for Real-Time Object Detection", AAAI 2020) for the box regression:

- Heatmap: every box draws an elliptical Gaussian on its class channel,
  centred on the grid cell holding the box centre (that cell is exactly 1, the
  only positive of the box), with standard deviations
  `gaussian_alpha * (w, h) / 6` in grid units. Overlapping Gaussians of one
  class keep their maximum. The focal loss reduces the penalty of negatives
  near a centre by `(1 - heatmap) ** beta`.
- Regression: the cells whose centres lie in the central `regression_beta`
  fraction of a box (plus its centre cell) regress that box; a cell claimed
  by several boxes regresses the smallest (as in FCOS). Each cell is weighted
  by a Gaussian of the box (standard deviations `regression_beta * (w, h) / 6`)
  at that cell, normalised so that every box weighs 1 in total: big boxes do
  not outweigh small ones. (TTFNet also scales a box's weight by the log of
  its area; not here.)

Memory: the intermediates are `(B, N, Hg*Wg)` for N padded boxes; the class
heatmap is a `segment_max` into `(B*C, Hg*Wg)`, never `(B, N, Hg*Wg, C)`.
"""

from keras import ops


def grid_centers(grid_height, grid_width, stride):
    """Pixel centres `(H*W, 2)` as `(x, y)` of a grid of cells of `stride` pixels."""
    ys = (ops.arange(grid_height, dtype="float32") + 0.5) * stride  # (H,)
    xs = (ops.arange(grid_width, dtype="float32") + 0.5) * stride  # (W,)
    yy, xx = ops.meshgrid(ys, xs, indexing="ij")  # (H, W)
    return ops.stack([ops.reshape(xx, (-1,)), ops.reshape(yy, (-1,))], axis=-1)  # (HW, 2)


def _gaussian(dx, dy, width, height, factor):
    """exp(-dx^2 / 2 sx^2 - dy^2 / 2 sy^2) with s = factor * size / 6 (grid units)."""
    sigma_x = factor * width / 6.0
    sigma_y = factor * height / 6.0
    exponent = dx**2 / (2.0 * sigma_x**2 + 1e-9) + dy**2 / (2.0 * sigma_y**2 + 1e-9)
    return ops.exp(-exponent)


def assign_targets(boxes, labels, num_classes, grid_shape, stride, gaussian_alpha=0.54,
                   regression_beta=0.54):
    """Dense targets of a batch of boxes on a grid of stride `stride`.

    Args:
        boxes: `(B, N, 4)` float boxes, `"xyxy"` in input pixels.
        labels: `(B, N)` int class ids; `-1` (any value outside
            `[0, num_classes)`) marks a padded box, which is ignored.
        num_classes: number of classes C.
        grid_shape: python ints `(Hg, Wg)`, the output grid size.
        stride: python int, pixels per grid cell.
        gaussian_alpha: size of the heatmap Gaussians (fraction of the box).
        regression_beta: fraction of the box (around its centre) whose cells
            regress it.

    Returns:
        A dict of float32 tensors:
        - `"heatmap"`: `(B, Hg*Wg, C)` in [0, 1], exactly 1 at box centres.
        - `"box_targets"`: `(B, Hg*Wg, 4)` the xyxy box each cell regresses.
        - `"box_weights"`: `(B, Hg*Wg)` regression weights (0 = none); each
          box's weights sum to 1 (unless all its cells went to smaller boxes).
        - `"num_objects"`: `(B,)` the number of real boxes per image.

    Example:

    >>> targets = assign_targets(np.array([[[8., 8., 24., 16.]]]), np.array([[1]]),
    ...                          num_classes=2, grid_shape=(8, 8), stride=4)
    >>> float(targets["heatmap"][0, 3 * 8 + 4, 1])   # centre (16, 12) -> cell (row 3, col 4)
    1.0
    """
    grid_height, grid_width = int(grid_shape[0]), int(grid_shape[1])
    num_cells = grid_height * grid_width
    boxes = ops.cast(boxes, "float32")  # (B, N, 4)
    labels = ops.cast(labels, "int32")  # (B, N)
    valid = (labels >= 0) & (labels < num_classes)  # (B, N)
    valid_f = ops.cast(valid, "float32")

    x_min, y_min, x_max, y_max = [boxes[..., i] for i in range(4)]  # (B, N) each
    width = ops.maximum(x_max - x_min, 0.0)  # (B, N) pixels
    height = ops.maximum(y_max - y_min, 0.0)
    center_x = (x_min + x_max) / 2.0  # (B, N) pixels
    center_y = (y_min + y_max) / 2.0
    # The cell that holds the centre (clipped: a box may reach outside the image).
    cell_col = ops.clip(ops.floor(center_x / stride), 0.0, grid_width - 1.0)  # (B, N)
    cell_row = ops.clip(ops.floor(center_y / stride), 0.0, grid_height - 1.0)

    rows = ops.floor(ops.arange(num_cells, dtype="float32") / grid_width)  # (HW,)
    cols = ops.arange(num_cells, dtype="float32") - rows * grid_width  # (HW,)
    dx = cols[None, None, :] - cell_col[..., None]  # (B, N, HW) grid units
    dy = rows[None, None, :] - cell_row[..., None]
    grid_w = (width / stride)[..., None]  # (B, N, 1)
    grid_h = (height / stride)[..., None]

    # === Heatmap: per class, the max of its boxes' Gaussians ===
    gaussian = _gaussian(dx, dy, grid_w, grid_h, gaussian_alpha) * valid_f[..., None]  # (B,N,HW)
    batch = ops.shape(boxes)[0]
    num_boxes = ops.shape(boxes)[1]
    image_index = ops.arange(batch, dtype="int32")[:, None]  # (B, 1)
    segment = ops.where(valid, image_index * num_classes + ops.maximum(labels, 0),
                        batch * num_classes)  # (B, N); padded boxes -> a spare segment
    heatmap = ops.segment_max(
        ops.reshape(gaussian, (-1, num_cells)), ops.reshape(segment, (-1,)),
        num_segments=batch * num_classes + 1,
    )[:-1]  # (B*C, HW); empty segments are -inf or the lowest float
    heatmap = ops.maximum(heatmap, 0.0)
    heatmap = ops.transpose(ops.reshape(heatmap, (batch, num_classes, num_cells)), (0, 2, 1))

    # === Regression: central region of each box, the smallest box wins ===
    centers = grid_centers(grid_height, grid_width, stride)  # (HW, 2) pixels
    px = centers[None, None, :, 0]  # (1, 1, HW)
    py = centers[None, None, :, 1]
    half_w = (regression_beta * width / 2.0)[..., None]  # (B, N, 1)
    half_h = (regression_beta * height / 2.0)[..., None]
    central = (ops.abs(px - center_x[..., None]) <= half_w) & (
        ops.abs(py - center_y[..., None]) <= half_h)  # (B, N, HW)
    is_center_cell = (dx == 0.0) & (dy == 0.0)
    region = (central | is_center_cell) & valid[..., None]  # (B, N, HW)
    area = (width * height)[..., None]  # (B, N, 1)
    cost = ops.where(region, area, 3.0e38)  # (B, N, HW)
    owner = ops.argmin(cost, axis=1)  # (B, HW)
    owned = region & (ops.arange(num_boxes, dtype=owner.dtype)[None, :, None] == owner[:, None, :])
    weights = ops.where(owned, _gaussian(dx, dy, grid_w, grid_h, regression_beta), 0.0)
    weights = weights / ops.maximum(ops.sum(weights, axis=2, keepdims=True), 1e-12)  # (B, N, HW)
    box_weights = ops.sum(weights, axis=1)  # (B, HW)
    owner = ops.cast(owner, "int32")[..., None]  # (B, HW, 1)
    box_targets = ops.take_along_axis(boxes, owner, axis=1)  # (B, HW, 4)
    return {
        "heatmap": heatmap,
        "box_targets": box_targets,
        "box_weights": box_weights,
        "num_objects": ops.sum(valid_f, axis=1),
    }
