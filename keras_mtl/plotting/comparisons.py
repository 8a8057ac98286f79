"""Bar charts comparing models: multi-task vs single-task, efficiency, the leaderboard."""

import numpy as np

from keras_mtl.plotting.figures import new_figure, save


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

    Example:

    >>> import os, tempfile
    >>> comparison = {
    ...     "multi_task": {"metrics": {"label": {"accuracy": 0.9}}, "params": 150,
    ...                    "train_seconds": 10.0},
    ...     "single_task": {"label": {"metrics": {"label": {"accuracy": 0.8}},
    ...                               "params": 100, "train_seconds": 8.0}},
    ...     "delta_m": 12.5}
    >>> path = plot_comparison(comparison, os.path.join(tempfile.mkdtemp(), "c.png"))
    >>> path.endswith("c.png")
    True
    """
    data = comparison.to_dict() if hasattr(comparison, "to_dict") else comparison
    mtl, singles = data["multi_task"], data["single_task"]
    labels, mtl_values, single_values = [], [], []
    for task, metrics in mtl["metrics"].items():
        for metric, value in metrics.items():
            labels.append(f"{task}\n{metric}")
            mtl_values.append(value)
            single_values.append(singles[task]["metrics"].get(task, {}).get(metric, np.nan))
    figure = new_figure(max(6.0, 1.1 * len(labels)) + 4.0, 4.0)
    left, right = figure.subplots(
        1, 2, gridspec_kw={"width_ratios": [max(2.0, len(labels) / 2.0), 1.2]})
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
    return save(figure, path)


def plot_efficiency(report, path):
    """Saves bar charts of parameters, FLOPs/image and images/s per model.

    Args:
        report: the dict of `keras_mtl.evaluation.efficiency_report`.
        path: where to write the PNG.

    Returns:
        `path`.

    Example:

    >>> import os, tempfile
    >>> report = {"multi_task": {"params": 150, "flops": None, "images_per_second": 30.0},
    ...           "single_task": {"label": {"params": 100, "images_per_second": 40.0}},
    ...           "single_task_sum": {"params": 100, "images_per_second": 40.0}}
    >>> path = plot_efficiency(report, os.path.join(tempfile.mkdtemp(), "e.png"))
    >>> path.endswith("e.png")
    True
    """
    panels = [("params", "parameters"), ("flops", "FLOPs / image"),
              ("images_per_second", "inference images/s")]
    panels = [(k, t) for k, t in panels if report["multi_task"].get(k) is not None]
    figure = new_figure(4.0 * len(panels), 3.4)
    axes = figure.subplots(1, len(panels), squeeze=False)
    names = ["multi-task"] + [f"{t} only" for t in report["single_task"]] + ["single sum"]
    for axis, (key, title) in zip(axes[0], panels):
        values = ([report["multi_task"][key]] + [r[key] for r in report["single_task"].values()]
                  + [report["single_task_sum"][key]])
        colours = ["tab:blue"] + ["tab:orange"] * len(report["single_task"]) + ["tab:red"]
        axis.bar(range(len(values)), values, color=colours)
        axis.set_xticks(range(len(values)))
        axis.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
        axis.set_title(title, fontsize=9)
    return save(figure, path)


def plot_leaderboard(leaderboard, path):
    """Saves a leaderboard as a PNG: delta-m with confidence bars, per-task changes.

    Left: each method's mean delta-m over seeds with its confidence
    interval (Student t) as an error bar, best at the top. Right: each
    method's mean relative change per task against the single-task
    baselines.

    Args:
        leaderboard: a `keras_mtl.evaluation.leaderboard.Leaderboard`.
        path: where to write the PNG.

    Returns:
        `path`.

    Example (on the results of a leaderboard run):

    ```python
    from keras_mtl.evaluation import leaderboard as lb

    board = lb.leaderboard_from_file("runs/leaderboard/results.jsonl")
    plot_leaderboard(board, "runs/leaderboard/board.png")
    ```
    """
    summaries = [s for s in leaderboard.summaries() if s.seeds][::-1]  # best drawn on top
    labels = [s.label for s in summaries]
    means = np.array([s.delta_m_mean for s in summaries], "float64")
    low = np.array([s.delta_m_low for s in summaries], "float64")
    high = np.array([s.delta_m_high for s in summaries], "float64")
    errors = np.nan_to_num(np.stack([means - low, high - means]), nan=0.0)
    figure = new_figure(13.0, max(3.0, 0.35 * len(labels) + 1.5))
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
    return save(figure, path, dpi=110)
