"""Figures drawn by matplotlib's object API on the Agg canvas, and saving them.

No `matplotlib.pyplot` and no `matplotlib.use`: a `Figure` made here belongs
to no global figure manager, so drawing never changes the process-wide
backend, opens no window and needs no `close` (the figure is freed with its
last reference). matplotlib is imported inside the functions (an optional
dependency).
"""


def new_figure(width, height):
    """Returns an empty matplotlib `Figure` of `width` x `height` inches.

    The figure has its own Agg canvas (files only, no display), independent
    of `matplotlib.get_backend()`; add axes with `figure.subplots(...)` or
    `figure.add_axes(...)` and write it with `save`.

    Args:
        width: width in inches.
        height: height in inches.

    Returns:
        A `matplotlib.figure.Figure`.

    Example:

    >>> figure = new_figure(4.0, 3.0)
    >>> axes = figure.subplots()
    >>> lines = axes.plot([1, 2, 3], [3.0, 2.0, 1.5])
    >>> figure.get_size_inches().tolist()
    [4.0, 3.0]
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def save(figure, path, dpi=100, tight_layout=True):
    """Writes `figure` to `path` (PNG unless the extension names another format).

    Args:
        figure: a `Figure` from `new_figure`.
        path: the file to write.
        dpi: dots per inch.
        tight_layout: fit the axes, titles and labels to the figure first.

    Returns:
        `path`.

    Example:

    >>> import os, tempfile
    >>> figure = new_figure(2.0, 2.0)
    >>> lines = figure.subplots().plot([0, 1], [1, 0])
    >>> path = save(figure, os.path.join(tempfile.mkdtemp(), "line.png"))
    >>> open(path, "rb").read(4)
    b'\\x89PNG'
    """
    if tight_layout:
        figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    return path
