"""Delta-m: the average relative gain of a multi-task model over single-task models.

Convention (Maninis, Radosavovic, Kokkinos, "Attentive Single-Tasking of
Multiple Tasks", CVPR 2019, eq. 5; with several metrics per task as in
Vandenhende et al., "Multi-Task Learning for Dense Prediction Tasks: A
Survey", TPAMI 2021):

    delta_m = 100 / T * sum_t  1 / |M_t| * sum_{j in M_t}  (-1)^{l_j} (M_mtl,j - M_single,j) / M_single,j

in percent: first the mean relative difference over the metrics `M_t` of
each task `t`, then the mean over the `T` tasks, so a task with three
metrics weighs as much as a task with one. `l_j = 1` when lower is better
for metric `j` (a loss, an error, a depth RMSE), `0` when higher is better
(accuracy, mIoU, mAP). Positive = the multi-task model is better on
average; `+5` means 5 % better relative to the single-task baselines.

Example:

>>> round(delta_m({"seg": {"miou": 0.66}, "depth": {"rmse": 0.9}},
...               {"seg": {"miou": 0.60}, "depth": {"rmse": 1.0}},
...               {"miou": True, "rmse": False}), 6)   # (+10 % + 10 %) / 2
10.0
"""

import math

# Higher is better for these metric names unless told otherwise.
HIGHER_IS_BETTER = {
    "accuracy": True, "miou": True, "iou": True, "map": True, "map50": True, "map75": True,
    "auc": True, "precision50": True, "recall50": True, "f1": True,
    "loss": False, "error": False, "rmse": False, "mae": False,
}


def _direction(higher_is_better, task, metric):
    if isinstance(higher_is_better, bool):
        return higher_is_better
    if higher_is_better is None:
        higher_is_better = {}
    if isinstance(higher_is_better, dict):
        per_task = higher_is_better.get(task)
        if isinstance(per_task, dict) and metric in per_task:
            return bool(per_task[metric])
        if isinstance(per_task, bool):
            return per_task
        if metric in higher_is_better and isinstance(higher_is_better[metric], bool):
            return higher_is_better[metric]
    base = metric.split("/")[-1]
    for name in (base, base.split("_")[0]):
        if name in HIGHER_IS_BETTER:
            return HIGHER_IS_BETTER[name]
    raise ValueError(
        f"Is higher better for metric '{metric}' of task '{task}'? Say so in "
        "higher_is_better, e.g. {'" + metric + "': True}."
    )


def delta_m_per_task(mtl_metrics, single_task_metrics, higher_is_better=None):
    """The per-task relative gains (percent) that `delta_m` averages.

    Args: as for `delta_m`.

    Returns:
        `{task: {"delta": float, "metrics": {metric: float}}}`: each
        metric's signed relative gain in percent and their mean per task.
    """
    if not mtl_metrics:
        raise ValueError("mtl_metrics is empty: no task to compare.")
    out = {}
    for task, metrics in mtl_metrics.items():
        if task not in single_task_metrics:
            raise ValueError(f"No single-task metrics for task '{task}'; they cover "
                             f"{sorted(single_task_metrics)}.")
        if isinstance(metrics, (int, float)):  # one metric per task, given bare
            metrics = {task: metrics}
            baseline = {task: single_task_metrics[task]}
        else:
            baseline = single_task_metrics[task]
        if not metrics:
            raise ValueError(f"Task '{task}' has no metrics.")
        gains = {}
        for metric, value in metrics.items():
            if metric not in baseline:
                raise ValueError(f"The single-task metrics of '{task}' lack '{metric}'.")
            reference = float(baseline[metric])
            value = float(value)
            if reference == 0.0 or not math.isfinite(reference) or not math.isfinite(value):
                raise ValueError(
                    f"Cannot take a relative difference for '{task}/{metric}': single-task "
                    f"{reference}, multi-task {value} (the baseline must be finite and non-zero)."
                )
            sign = 1.0 if _direction(higher_is_better, task, metric) else -1.0
            gains[metric] = 100.0 * sign * (value - reference) / abs(reference)
        out[task] = {"delta": sum(gains.values()) / len(gains), "metrics": gains}
    return out


def delta_m(mtl_metrics, single_task_metrics, higher_is_better=None):
    """Delta-m (Maninis et al., CVPR 2019), in percent; positive = MTL better.

    Args:
        mtl_metrics: `{task: {metric: value}}` of the multi-task model (or
            `{task: value}` with one metric per task).
        single_task_metrics: the same structure for the single-task models;
            it must have every task and metric of `mtl_metrics`.
        higher_is_better: `{metric: bool}` (for every task), `{task:
            {metric: bool}}`, `{task: bool}`, or one bool; default: known
            names (`accuracy`, `miou`, `map*`, `iou*`: higher; `loss`,
            `rmse`, `error`: lower).

    Returns:
        A float: the mean over tasks of each task's mean signed relative
        difference over its metrics, times 100.

    Raises:
        ValueError: a missing task or metric, a zero or non-finite
            baseline, or a metric of unknown direction.

    Example:

    >>> round(delta_m({"a": {"acc": 0.9}}, {"a": {"acc": 0.8}}, {"acc": True}), 6)
    12.5
    """
    per_task = delta_m_per_task(mtl_metrics, single_task_metrics, higher_is_better)
    return sum(task["delta"] for task in per_task.values()) / len(per_task)
