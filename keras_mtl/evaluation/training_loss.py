"""Under-fitting or over-fitting? Each task's final training loss against its single-task run.

A multi-task model can lose a task's validation metric in two ways: its
trunk fits that task's training data less well (a higher training loss at
the end: under-fitting, which more steps, capacity or a larger share of the
updates address), or it fits it as well and generalises worse (the same
training loss: over-fitting, which regularisation addresses). Leaderboard
rows keep each run's per-task training-loss curve (`loss_curve`, from
`keras_mtl.callbacks.TaskLossCurve`); this module compares the last window
of a method's run with that of the same seed's single-task run.
"""

from keras_mtl.evaluation.confidence import mean_confidence_interval


def final_training_loss(row, task):
    """The task's mean training loss over the last window of a row's `loss_curve`.

    Returns `None` when the row has no curve (rows from before the curves
    were kept) or the task has no point in it.

    Example:

    >>> row = {"loss_curve": [[50, {"a": 0.9, "b": 2.0}], [100, {"a": 0.4}]]}
    >>> final_training_loss(row, "a"), final_training_loss(row, "b")
    (0.4, 2.0)
    """
    for _, losses in reversed(row.get("loss_curve") or []):
        if task in losses:
            return float(losses[task])
    return None


def training_loss_changes(rows, label, tasks, kind="multi"):
    """Per task, the relative change of the final training loss against single-task, per seed.

    Args:
        rows: leaderboard rows of one sweep (`Leaderboard.rows`).
        label: the method.
        tasks: the task names.
        kind: `"multi"` or `"same_compute"`.

    Returns:
        `{task: [(seed, single_loss, method_loss, change_percent), ...]}`
        over the seeds where both runs finished with a curve; a positive
        change is a higher training loss than the single-task run's.

    Example:

    >>> rows = [
    ...     {"kind": "single", "label": "a", "seed": 0, "status": "ok",
    ...      "loss_curve": [[10, {"a": 0.5}]]},
    ...     {"kind": "multi", "label": "equal", "seed": 0, "status": "ok",
    ...      "loss_curve": [[10, {"a": 0.75}]]}]
    >>> training_loss_changes(rows, "equal", ["a"])
    {'a': [(0, 0.5, 0.75, 50.0)]}
    """
    singles = {(r["label"], r["seed"]): r for r in rows
               if r["kind"] == "single" and r["status"] == "ok"}
    changes = {task: [] for task in tasks}
    for row in rows:
        if row["kind"] != kind or row["label"] != label or row["status"] != "ok":
            continue
        for task in tasks:
            single = singles.get((task, row["seed"]))
            single_loss = final_training_loss(single, task) if single else None
            method_loss = final_training_loss(row, task)
            if single_loss is None or method_loss is None or single_loss <= 0.0:
                continue
            change = 100.0 * (method_loss - single_loss) / single_loss
            changes[task].append((row["seed"], single_loss, method_loss, change))
    for task in tasks:
        changes[task].sort()
    return changes


def training_loss_markdown(rows, labels, tasks, confidence=0.95):
    """A Markdown table: each method's final training loss per task against single-task.

    One cell per method and task: the mean relative change over seeds, its
    interval with 2 or more seeds, and the seed count. Returns `""` when no
    row has a curve.
    """
    lines = []
    for label in labels:
        changes = training_loss_changes(rows, label, tasks)
        if not any(changes.values()):
            continue
        cells = []
        for task in tasks:
            values = [change for _, _, _, change in changes[task]]
            if not values:
                cells.append("")
            elif len(values) == 1:
                cells.append(f"{values[0]:+.1f}% (1 seed)")
            else:
                mean, low, high = mean_confidence_interval(values, confidence)
                cells.append(f"{mean:+.1f}% [{low:+.1f}, {high:+.1f}] ({len(values)} seeds)")
        lines.append(f"| `{label}` | " + " | ".join(cells) + " |")
    if not lines:
        return ""
    header = ("Final training loss against the same seed's single-task run (the mean over the "
              "curve's last window, the last ninth of a leaderboard run; + is a higher loss, "
              "a task fitted less well):\n\n"
              "| method | " + " | ".join(tasks) + " |\n|---|" + "---|" * len(tasks))
    return header + "\n" + "\n".join(lines)
