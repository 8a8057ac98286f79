"""Matplotlib plots of training: per-task curves and weight trajectories."""

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
