"""Matplotlib plots, saved as PNG: training curves, task weights, comparisons, predictions.

- `plot_history`: one panel per task loss (train and validation) and one of
  the task weights.
- `plot_task_curves`: per task, its loss and each of its metrics, train
  and validation.
- `plot_weights`: the weight trajectories alone.
- `plot_comparison`: the `keras_mtl.evaluation.compare` table as bar charts.
- `plot_efficiency`: parameters, FLOPs and images/s of the multi-task model
  against the single-task models.
- `plot_prediction_gallery`: a grid of images with predicted (or true)
  boxes and masks.

matplotlib is imported inside the functions (an optional dependency).
"""

import math


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_history(history, path, task_names=None):
    """Saves a PNG with one panel per task loss and one of the task weights.

    Args:
        history: a `keras.callbacks.History` or its `.history` dict
            (`"<task>_loss"`, `"val_<task>_loss"`, `"weight/<task>"` ...).
        path: where to write the PNG.
        task_names: tasks to draw; default: every `<task>_loss` key.

    Returns:
        `path`.

    Example:

    >>> history = model.fit(train, validation_data=val, epochs=3)
    >>> plot_history(history, "curves.png")
    """
    logs = getattr(history, "history", history)
    if task_names is None:
        task_names = [k[: -len("_loss")] for k in logs if k.endswith("_loss")
                      and not k.startswith("val_")]
    plt = _pyplot()
    panels = len(task_names) + 1
    columns = min(panels, 4)
    rows = math.ceil(panels / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows), squeeze=False)
    axes = axes.ravel()
    for axis, name in zip(axes, task_names):
        for key, style in ((f"{name}_loss", "-"), (f"val_{name}_loss", "--")):
            if key in logs:
                axis.plot(range(1, len(logs[key]) + 1), logs[key], style, label=key)
        axis.set_title(f"{name} loss")
        axis.set_xlabel("epoch")
        axis.legend(fontsize=8)
    weight_axis = axes[len(task_names)]
    for name in task_names:
        key = f"weight/{name}"
        if key in logs:
            weight_axis.plot(range(1, len(logs[key]) + 1), logs[key], label=name)
    weight_axis.set_title("task weights")
    weight_axis.set_xlabel("epoch")
    weight_axis.legend(fontsize=8)
    for axis in axes[panels:]:
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _logs(history):
    return getattr(history, "history", history)


def _task_names(logs, task_names):
    if task_names is not None:
        return list(task_names)
    return [k[: -len("_loss")] for k in logs if k.endswith("_loss") and not k.startswith("val_")]


def _save(figure, path, plt):
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_task_curves(history, path, task_names=None):
    """Saves a PNG with one row per task: its loss and each metric, train and validation.

    Args:
        history: a `keras.callbacks.History` or its `.history` dict; the
            metrics of task `t` are the keys `t_<metric>` (and `val_t_<metric>`).
        path: where to write the PNG.
        task_names: tasks to draw; default: every `<task>_loss` key.

    Returns:
        `path`.
    """
    logs = _logs(history)
    task_names = _task_names(logs, task_names)
    if not task_names:
        raise ValueError(f"No '<task>_loss' key in the history (keys: {sorted(logs)}).")
    per_task = {}
    for name in task_names:
        keys = [k for k in logs if k.startswith(f"{name}_") and not k.startswith("val_")]
        keys.sort(key=lambda k: (k != f"{name}_loss", k))
        per_task[name] = keys
    columns = max(len(keys) for keys in per_task.values())
    plt = _pyplot()
    figure, axes = plt.subplots(len(task_names), columns, figsize=(3.6 * columns,
                                                                    2.8 * len(task_names)),
                                squeeze=False)
    for row, name in enumerate(task_names):
        for column in range(columns):
            axis = axes[row, column]
            if column >= len(per_task[name]):
                axis.axis("off")
                continue
            key = per_task[name][column]
            for label, values, style in ((key, logs[key], "-"),
                                         (f"val_{key}", logs.get(f"val_{key}"), "--")):
                if values is not None:
                    axis.plot(range(1, len(values) + 1), values, style, label=label)
            axis.set_title(key, fontsize=9)
            axis.set_xlabel("epoch")
            axis.legend(fontsize=7)
    return _save(figure, path, plt)


def plot_weights(history, path, task_names=None):
    """Saves a PNG of the task weight trajectories (`weight/<task>` logs).

    Raises:
        ValueError: if the history has no `weight/<task>` key.
    """
    logs = _logs(history)
    keys = [k for k in logs if k.startswith("weight/")]
    if task_names is not None:
        keys = [f"weight/{n}" for n in task_names if f"weight/{n}" in logs]
    if not keys:
        raise ValueError(f"No 'weight/<task>' key in the history (keys: {sorted(logs)}).")
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5, 3.2))
    for key in keys:
        axis.plot(range(1, len(logs[key]) + 1), logs[key], label=key[len("weight/"):])
    axis.set_title("task weights")
    axis.set_xlabel("epoch")
    axis.legend(fontsize=8)
    return _save(figure, path, plt)


def _comparison_dict(comparison):
    return comparison.to_dict() if hasattr(comparison, "to_dict") else comparison


def plot_comparison(comparison, path):
    """Saves the multi-task vs single-task comparison as bar charts.

    Left: every task metric, multi-task next to single-task, with the
    relative difference written above. Right: multi-task cost as a fraction
    of the single-task sum (parameters, FLOPs, training time) and delta-m
    in the title.

    Args:
        comparison: a `keras_mtl.evaluation.Comparison` or its `to_dict()`.
        path: where to write the PNG.

    Returns:
        `path`.
    """
    import numpy as np

    data = _comparison_dict(comparison)
    mtl, singles = data["multi_task"], data["single_task"]
    labels, mtl_values, single_values = [], [], []
    for task, metrics in mtl["metrics"].items():
        for metric, value in metrics.items():
            labels.append(f"{task}\n{metric}")
            mtl_values.append(value)
            single_values.append(singles[task]["metrics"].get(task, {}).get(metric, np.nan))
    plt = _pyplot()
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(max(6.0, 1.1 * len(labels)) + 4.0, 4.0),
        gridspec_kw={"width_ratios": [max(2.0, len(labels) / 2.0), 1.2]})
    x = np.arange(len(labels))
    left.bar(x - 0.2, mtl_values, 0.4, label="multi-task")
    left.bar(x + 0.2, single_values, 0.4, label="single-task")
    for index, (a, b) in enumerate(zip(mtl_values, single_values)):
        if b and np.isfinite(a) and np.isfinite(b):
            left.text(index, max(a, b) + 0.01, f"{100 * (a - b) / abs(b):+.1f}%",
                      ha="center", fontsize=7)
    left.set_xticks(x)
    left.set_xticklabels(labels, fontsize=7)
    left.set_ylabel("metric (validation)")
    left.legend(fontsize=8)
    delta = data.get("delta_m")
    defined = delta is not None and np.isfinite(delta)
    left.set_title(f"multi-task vs single-task, delta-m {delta:+.2f}%" if defined
                   else "multi-task vs single-task, delta-m undefined")
    ratios = {"parameters": mtl["params"] / max(1, sum(r["params"] for r in singles.values()))}
    total_seconds = sum(r["train_seconds"] for r in singles.values())
    if total_seconds:
        ratios["train time"] = mtl["train_seconds"] / total_seconds
    efficiency = data.get("efficiency") or {}
    if efficiency.get("ratio", {}).get("flops"):
        ratios["FLOPs"] = efficiency["ratio"]["flops"]
    if efficiency.get("ratio", {}).get("images_per_second"):
        ratios["images/s"] = efficiency["ratio"]["images_per_second"]
    right.bar(list(ratios), list(ratios.values()), color="tab:green")
    right.axhline(1.0, color="grey", linewidth=0.8)
    for index, value in enumerate(ratios.values()):
        right.text(index, value + 0.02, f"{value:.2f}x", ha="center", fontsize=8)
    right.set_title("multi-task / sum of single-task", fontsize=9)
    right.tick_params(axis="x", labelsize=7)
    return _save(figure, path, plt)


def plot_efficiency(report, path):
    """Saves bar charts of parameters, FLOPs/image and images/s per model.

    Args:
        report: the dict of `keras_mtl.evaluation.efficiency_report`.
        path: where to write the PNG.

    Returns:
        `path`.
    """
    figures = [("params", "parameters"), ("flops", "FLOPs / image"),
               ("images_per_second", "inference images/s")]
    figures = [(k, t) for k, t in figures if report["multi_task"].get(k) is not None]
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(figures), figsize=(4.0 * len(figures), 3.4),
                                squeeze=False)
    names = ["multi-task"] + [f"{t} only" for t in report["single_task"]] + ["single sum"]
    for axis, (key, title) in zip(axes[0], figures):
        values = ([report["multi_task"][key]] + [r[key] for r in report["single_task"].values()]
                  + [report["single_task_sum"][key]])
        colours = ["tab:blue"] + ["tab:orange"] * len(report["single_task"]) + ["tab:red"]
        axis.bar(range(len(values)), values, color=colours)
        axis.set_xticks(range(len(values)))
        axis.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
        axis.set_title(title, fontsize=9)
    return _save(figure, path, plt)


def plot_prediction_gallery(images, path, predictions=None, detection=None, segmentation=None,
                            classification=None, class_names=None, ground_truth=None,
                            score_threshold=0.3, columns=4, bounding_box_format="xyxy"):
    """Saves a grid of images with boxes and masks drawn on them.

    Args:
        images: `(N, H, W, 3)` uint8 or 0..255 floats.
        path: where to write the PNG.
        predictions: `model.predict(images)` (decoded outputs), or None.
        detection: name of the detection task to draw (`<name>_boxes`, ...).
        segmentation: name of the segmentation task to draw (a class map).
        classification: name(s) of classification tasks whose top class
            goes in each title.
        class_names: optional `{task: [names]}` for titles and box labels.
        ground_truth: optional targets dict (as in the data) drawn instead of
            or, with `predictions`, next to them: true boxes dashed white.
        score_threshold: boxes scored below are not drawn.
        columns: images per row.
        bounding_box_format: format of the boxes.

    Returns:
        `path`.
    """
    import numpy as np
    from matplotlib import colormaps, patches

    images = np.asarray(images)
    predictions = {k: np.asarray(v) for k, v in (predictions or {}).items()}
    class_names = class_names or {}
    if isinstance(classification, str):
        classification = [classification]
    count = len(images)
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    plt = _pyplot()
    figure, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 3.0 * rows), squeeze=False)
    palette = colormaps["tab10"]

    def xyxy(boxes, height, width):
        boxes = np.asarray(boxes, "float32").reshape(-1, 4)
        if bounding_box_format == "xyxy" or not len(boxes):
            return boxes
        from keras import ops
        from keras.utils import bounding_boxes

        return ops.convert_to_numpy(bounding_boxes.convert_format(
            boxes, bounding_box_format, "xyxy", height=height, width=width))

    for index, axis in enumerate(axes.ravel()):
        axis.axis("off")
        if index >= count:
            continue
        image = images[index]
        picture = image if image.dtype == np.uint8 else np.clip(image / 255.0, 0.0, 1.0)
        axis.imshow(picture)
        height, width = image.shape[:2]
        source = predictions if segmentation in predictions else (ground_truth or {})
        if segmentation and segmentation in source:
            mask = np.asarray(source[segmentation][index])
            mask = mask[..., 0] if mask.ndim == 3 else mask
            overlay = np.zeros((height, width, 4), "float32")
            for value in np.unique(mask):
                if 0 < value < 255:
                    overlay[mask == value] = (*palette(int(value - 1) % 10)[:3], 0.45)
            axis.imshow(overlay)
        if detection and ground_truth is not None and detection in ground_truth:
            truth = ground_truth[detection]
            for box, label in zip(xyxy(truth["boxes"][index], height, width),
                                  np.asarray(truth["labels"][index]).reshape(-1)):
                if label < 0:
                    continue
                axis.add_patch(patches.Rectangle(
                    (box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False,
                    edgecolor="white", linestyle="--", linewidth=1.0))
        if detection and f"{detection}_boxes" in predictions:
            names = class_names.get(detection)
            boxes = xyxy(predictions[f"{detection}_boxes"][index], height, width)
            scores = predictions[f"{detection}_scores"][index]
            labels = predictions[f"{detection}_labels"][index]
            for box, score, label in zip(boxes, scores, labels):
                if label < 0 or score < score_threshold:
                    continue
                colour = palette(int(label) % 10)
                axis.add_patch(patches.Rectangle(
                    (box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False,
                    edgecolor=colour, linewidth=1.5))
                text = names[label] if names is not None else str(int(label))
                axis.text(box[0], box[1], f"{text} {score:.2f}", fontsize=6, color="white",
                          va="bottom", bbox={"facecolor": colour, "alpha": 0.7, "pad": 1,
                                             "edgecolor": "none"})
        title = []
        for name in classification or []:
            if name in predictions:
                probs = predictions[name][index]
                top = int(np.argmax(probs))
                names = class_names.get(name)
                title.append(f"{name}: {names[top] if names else top} ({probs[top]:.2f})")
            elif ground_truth is not None and name in ground_truth:
                label = int(np.asarray(ground_truth[name][index]).reshape(-1)[0])
                names = class_names.get(name)
                title.append(f"{name}: {names[label] if names and label >= 0 else label}")
        if title:
            axis.set_title("\n".join(title), fontsize=7)
        axis.set_xlim(-0.5, width - 0.5)
        axis.set_ylim(height - 0.5, -0.5)
    return _save(figure, path, plt)


def plot_leaderboard(leaderboard, path):
    """Saves a leaderboard as a PNG: delta-m with confidence bars, per-task changes.

    Left: each method's mean delta-m over seeds with its confidence
    interval (Student t) as an error bar, best at the top. Right: each
    method's mean relative change per task against the single-task
    baselines. Uses matplotlib's object API (no global backend).

    Args:
        leaderboard: a `keras_mtl.evaluation.leaderboard.Leaderboard`.
        path: where to write the PNG.

    Returns:
        `path`.
    """
    import numpy as np
    from matplotlib.figure import Figure

    summaries = [s for s in leaderboard.summaries() if s.seeds][::-1]  # best drawn on top
    labels = [s.label for s in summaries]
    means = np.array([s.delta_m_mean for s in summaries], "float64")
    low = np.array([s.delta_m_low for s in summaries], "float64")
    high = np.array([s.delta_m_high for s in summaries], "float64")
    errors = np.nan_to_num(np.stack([means - low, high - means]), nan=0.0)
    height = max(3.0, 0.35 * len(labels) + 1.5)
    figure = Figure(figsize=(13.0, height))
    left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1.0, 1.3]})
    y = np.arange(len(labels))
    colours = ["tab:green" if m > 0 else "tab:red" for m in np.nan_to_num(means)]
    left.barh(y, np.nan_to_num(means), xerr=errors, color=colours, alpha=0.8, capsize=3)
    left.axvline(0.0, color="black", linewidth=0.8)
    left.set_yticks(y)
    left.set_yticklabels(labels, fontsize=8)
    left.set_xlabel(f"delta-m % vs single-task (mean, {leaderboard.confidence:.0%} CI)")
    tasks = leaderboard.tasks
    width = 0.8 / max(1, len(tasks))
    for index, task in enumerate(tasks):
        values = [s.per_task_delta.get(task, np.nan) for s in summaries]
        right.barh(y + (index - (len(tasks) - 1) / 2) * width, np.nan_to_num(values), width,
                   label=task)
    right.axvline(0.0, color="black", linewidth=0.8)
    right.set_yticks(y)
    right.set_yticklabels([])
    right.set_xlabel("relative change per task % (mean over seeds)")
    right.legend(fontsize=8)
    figure.suptitle(f"{len(leaderboard.seeds)} seeds, {leaderboard.steps} steps per run")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path
