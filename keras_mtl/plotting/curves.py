"""Training curves from a Keras history: task losses, task metrics, task weights."""

import math

from keras_mtl.plotting.figures import new_figure, save


def _logs(history):
    return getattr(history, "history", history)


def _task_names(logs, task_names):
    if task_names is not None:
        return list(task_names)
    return [k[: -len("_loss")] for k in logs if k.endswith("_loss") and not k.startswith("val_")]


def _epochs(values):
    return range(1, len(values) + 1)


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

    >>> import os, tempfile
    >>> logs = {"label_loss": [1.0, 0.7], "val_label_loss": [1.1, 0.8],
    ...         "weight/label": [1.0, 0.9]}
    >>> path = plot_history(logs, os.path.join(tempfile.mkdtemp(), "curves.png"))
    >>> os.path.basename(path)
    'curves.png'
    """
    logs = _logs(history)
    task_names = _task_names(logs, task_names)
    panels = len(task_names) + 1
    columns = min(panels, 4)
    rows = math.ceil(panels / columns)
    figure = new_figure(4 * columns, 3.2 * rows)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for axis, name in zip(axes, task_names):
        for key, style in ((f"{name}_loss", "-"), (f"val_{name}_loss", "--")):
            if key in logs:
                axis.plot(_epochs(logs[key]), logs[key], style, label=key)
        axis.set_title(f"{name} loss")
        axis.set_xlabel("epoch")
        axis.legend(fontsize=8)
    weight_axis = axes[len(task_names)]
    for name in task_names:
        key = f"weight/{name}"
        if key in logs:
            weight_axis.plot(_epochs(logs[key]), logs[key], label=name)
    weight_axis.set_title("task weights")
    weight_axis.set_xlabel("epoch")
    if weight_axis.get_legend_handles_labels()[0]:
        weight_axis.legend(fontsize=8)
    for axis in axes[panels:]:
        axis.axis("off")
    return save(figure, path)


def plot_task_curves(history, path, task_names=None):
    """Saves a PNG with one row per task: its loss and each metric, train and validation.

    Args:
        history: a `keras.callbacks.History` or its `.history` dict; the
            metrics of task `t` are the keys `t_<metric>` (and `val_t_<metric>`).
        path: where to write the PNG.
        task_names: tasks to draw; default: every `<task>_loss` key.

    Returns:
        `path`.

    Raises:
        ValueError: if there is no task to draw.

    Example:

    >>> import os, tempfile
    >>> logs = {"label_loss": [1.0, 0.7], "label_accuracy": [0.4, 0.6],
    ...         "val_label_accuracy": [0.3, 0.5]}
    >>> path = plot_task_curves(logs, os.path.join(tempfile.mkdtemp(), "tasks.png"))
    >>> path.endswith("tasks.png")
    True
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
    columns = max(1, max(len(keys) for keys in per_task.values()))
    figure = new_figure(3.6 * columns, 2.8 * len(task_names))
    axes = figure.subplots(len(task_names), columns, squeeze=False)
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
                    axis.plot(_epochs(values), values, style, label=label)
            axis.set_title(key, fontsize=9)
            axis.set_xlabel("epoch")
            axis.legend(fontsize=7)
    return save(figure, path)


def plot_weights(history, path, task_names=None):
    """Saves a PNG of the task weight trajectories (`weight/<task>` logs).

    Args:
        history: a `keras.callbacks.History` or its `.history` dict.
        path: where to write the PNG.
        task_names: tasks to draw; default: every `weight/<task>` key.

    Returns:
        `path`.

    Raises:
        ValueError: if the history has no `weight/<task>` key.

    Example:

    >>> import os, tempfile
    >>> logs = {"weight/label": [1.0, 0.9], "weight/mask": [1.0, 1.1]}
    >>> path = plot_weights(logs, os.path.join(tempfile.mkdtemp(), "weights.png"))
    >>> path.endswith("weights.png")
    True
    """
    logs = _logs(history)
    keys = [k for k in logs if k.startswith("weight/")]
    if task_names is not None:
        keys = [f"weight/{n}" for n in task_names if f"weight/{n}" in logs]
    if not keys:
        raise ValueError(f"No 'weight/<task>' key in the history (keys: {sorted(logs)}).")
    figure = new_figure(5, 3.2)
    axis = figure.subplots()
    for key in keys:
        axis.plot(_epochs(logs[key]), logs[key], label=key[len("weight/"):])
    axis.set_title("task weights")
    axis.set_xlabel("epoch")
    axis.legend(fontsize=8)
    return save(figure, path)
