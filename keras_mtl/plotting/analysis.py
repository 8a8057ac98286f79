"""Plots of task relatedness: affinity and gradient-cosine heatmaps, conflict curves."""

import numpy as np

from keras_mtl.plotting.figures import new_figure, save


def plot_task_matrix(matrix, task_names, ax, title="", limit=None, fmt=None,
                     xlabel="affected task", ylabel="stepped-on task"):
    """Draws a `(T, T)` task matrix on `ax` as a heatmap centred on 0, values written in.

    Args:
        matrix: `(T, T)` array (NaN cells drawn blank).
        task_names: the T names.
        ax: a matplotlib `Axes`.
        title: the axes' title.
        limit: colour range `[-limit, limit]`; default the largest |value|.
        fmt: the format of the written values; default 2 decimals, or 2
            significant digits when a value is below 0.01.
        xlabel: the x axis label.
        ylabel: the y axis label.

    Returns:
        The image (for a colour bar).

    Example:

    >>> from keras_mtl.plotting.figures import new_figure
    >>> ax = new_figure(3.0, 3.0).subplots()
    >>> image = plot_task_matrix([[1.0, -0.2], [0.1, 1.0]], ["a", "b"], ax, limit=1.0)
    >>> image.get_clim()
    (-1.0, 1.0)
    """
    matrix = np.asarray(matrix, dtype="float64")
    finite = matrix[np.isfinite(matrix)]
    if fmt is None:
        nonzero = np.abs(finite[finite != 0])
        small = nonzero.size and nonzero.min() < 0.01
        fmt = "{:+.1e}" if small else "{:+.2f}"
    if limit is None:
        limit = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap="RdBu", vmin=-limit, vmax=limit)
    ticks = range(len(task_names))
    ax.set_xticks(ticks, task_names, rotation=45, ha="right")
    ax.set_yticks(ticks, task_names)
    for (i, j), value in np.ndenumerate(matrix):
        if np.isfinite(value):
            dark = abs(value) > 0.6 * limit
            ax.text(j, i, fmt.format(value), ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return image


def plot_affinity(affinity, task_names, path, cosine=None, title="Inter-task affinity (TAG)"):
    """Saves a PNG heatmap of the affinity matrix (and of the gradient cosines).

    The affinity colours are scaled to the off-diagonal values (the tasks'
    effects on each other); the diagonal, a task's effect on itself, is
    usually far larger and would saturate them.

    Args:
        affinity: `(T, T)` from `keras_mtl.analysis.task_affinity`.
        task_names: the T names.
        path: where to write the PNG.
        cosine: optional `(T, T)` mean cosine of the per-task gradients,
            drawn beside it.
        title: the affinity panel's title.

    Returns:
        `path`.

    Example:

    >>> import os, tempfile
    >>> affinity = [[0.5, 0.02], [-0.01, 0.4]]
    >>> path = plot_affinity(affinity, ["a", "b"], os.path.join(tempfile.mkdtemp(), "a.png"))
    >>> path.endswith("a.png")
    True
    """
    panels = 1 if cosine is None else 2
    size = 1.2 + 0.9 * len(task_names)
    figure = new_figure(size * panels + 1.5, size + 1)
    axes = figure.subplots(1, panels, squeeze=False)
    off = np.asarray(affinity, dtype="float64")[~np.eye(len(task_names), dtype=bool)]
    off = np.abs(off[np.isfinite(off)])
    limit = float(off.max()) if off.size and off.max() > 0 else None
    image = plot_task_matrix(affinity, task_names, axes[0, 0], title, limit=limit)
    figure.colorbar(image, ax=axes[0, 0], fraction=0.046)
    if cosine is not None:
        image = plot_task_matrix(cosine, task_names, axes[0, 1], "Gradient cosine (shared)",
                                 limit=1.0, xlabel="task", ylabel="task")
        figure.colorbar(image, ax=axes[0, 1], fraction=0.046)
    return save(figure, path, dpi=110)


def plot_gradient_conflict(monitor, path, task_names=None):
    """Saves a PNG of a `GradientConflictMonitor`'s measurements.

    Three panels: the heatmap of the mean pairwise cosine, the cosine of
    every pair over the training steps (below 0: conflict), and every
    task's gradient norm over the steps (log scale).

    Args:
        monitor: a `keras_mtl.callbacks.GradientConflictMonitor` after
            `fit`, or its `records` (list of dicts with `step`, `cosine`,
            `grad_norm`), then with `task_names`.
        path: where to write the PNG.
        task_names: the names, when `monitor` is a list of records.

    Returns:
        `path`.

    Raises:
        ValueError: if there is no measurement.

    Example:

    >>> import os, tempfile
    >>> records = [{"step": s, "cosine": np.array([[1.0, c], [c, 1.0]]),
    ...             "grad_norm": np.array([1.0, 0.5])} for s, c in ((0, 0.3), (5, -0.2))]
    >>> path = plot_gradient_conflict(records, os.path.join(tempfile.mkdtemp(), "g.png"),
    ...                               task_names=["a", "b"])
    >>> path.endswith("g.png")
    True
    """
    records = getattr(monitor, "records", monitor)
    if task_names is None:
        task_names = monitor.task_names
    if not records:
        raise ValueError("No measurement to plot.")
    steps = np.asarray([r["step"] for r in records])
    cosines = np.stack([r["cosine"] for r in records])  # (N, T, T)
    norms = np.stack([r["grad_norm"] for r in records])  # (N, T)
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(cosines)
        mean = np.where(finite.any(0), np.where(finite, cosines, 0).sum(0)
                        / np.maximum(finite.sum(0), 1), np.nan)
    figure = new_figure(15, 4.2)
    axes = figure.subplots(1, 3)
    image = plot_task_matrix(mean, task_names, axes[0], "Mean gradient cosine", limit=1.0,
                             xlabel="task", ylabel="task")
    figure.colorbar(image, ax=axes[0], fraction=0.046)
    count = len(task_names)
    for a in range(count):
        for b in range(a + 1, count):
            axes[1].plot(steps, cosines[:, a, b], ".-", label=f"{task_names[a]} / {task_names[b]}")
    axes[1].axhline(0.0, color="gray", lw=0.8)
    axes[1].set_ylim(-1.05, 1.05)
    axes[1].set_title("Pairwise gradient cosine")
    axes[1].set_xlabel("step")
    axes[1].legend(fontsize=8)
    for index, name in enumerate(task_names):
        axes[2].plot(steps, norms[:, index], ".-", label=name)
    if np.all(norms[np.isfinite(norms)] > 0):
        axes[2].set_yscale("log")
    axes[2].set_title("Gradient norm per task")
    axes[2].set_xlabel("step")
    axes[2].legend(fontsize=8)
    return save(figure, path, dpi=110)
