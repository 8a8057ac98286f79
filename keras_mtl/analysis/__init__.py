"""Task relatedness: inter-task affinity, gradient conflict, task groupings.

- `task_affinity(model, data, steps, interval)`: the lookahead inter-task
  affinity (TAG, Fifty et al. 2021) averaged over a short training run, a
  `(T, T)` matrix.
- `propose_groups(affinity, k)`: the grouping of the tasks into k shared
  trunks with the highest total affinity (exhaustive search).
- `analyse(model, data, output_dir)`: both on a short run that leaves the
  model as it was, printed, with `analysis.png` and `analysis.json`
  (`recipes/shapes.py --analyse`).
- `plot_affinity`, `plot_gradient_conflict`: PNG heatmaps and curves (from
  `keras_mtl.plotting`).
- During `fit`: `keras_mtl.callbacks.GradientConflictMonitor`.

Example:

```python
model.compile(optimizer=keras.optimizers.SGD(0.01))
affinity = keras_mtl.analysis.task_affinity(model, train, steps=40, interval=4)
keras_mtl.analysis.propose_groups(affinity, 2, model.task_names)
```
"""

import json
import os

import numpy as np

from keras_mtl.analysis.affinity import lookahead_affinity, task_affinity
from keras_mtl.analysis.grouping import grouping_score, partitions, propose_groups
from keras_mtl.analysis.task_gradients import gradient_statistics, task_gradients
from keras_mtl.plotting.analysis import plot_affinity, plot_gradient_conflict, plot_task_matrix


def _auto_format(matrix):
    finite = np.abs(np.asarray(matrix, dtype="float64"))
    finite = finite[np.isfinite(finite)]
    finite = finite[finite > 0]
    return "{:+.3f}" if not finite.size or finite.min() >= 0.01 else "{:+.2e}"


def format_matrix(matrix, task_names, fmt=None):
    """A `(T, T)` matrix as a text table with the task names (`fmt`: default
    3 decimals, or 3 significant digits when a value is below 0.01)."""
    fmt = fmt or _auto_format(matrix)
    width = max(8, *(len(name) for name in task_names))
    lines = [" " * width + "  " + "  ".join(name.rjust(width) for name in task_names)]
    for name, row in zip(task_names, np.asarray(matrix)):
        cells = [(fmt.format(v) if np.isfinite(v) else "nan").rjust(width) for v in row]
        lines.append(name.rjust(width) + "  " + "  ".join(cells))
    return "\n".join(lines)


def _optimizers(model):
    return [o for o in (getattr(model, "optimizer", None), getattr(model, "trunk_optimizer", None))
            if o is not None]


def analyse(model, data, output_dir=None, steps=50, interval=5, learning_rate=None, restore=True,
            verbose=1):
    """Task affinity and gradient conflict on a short training run, printed and drawn.

    Trains `model` for `steps` steps on `data`, measuring the lookahead
    inter-task affinity and the cosine of the per-task gradients of the
    shared parameters every `interval` steps (`task_affinity`), then (with
    `restore=True`) puts back the model's weights and optimizer state, so
    the analysis does not change the training that follows. Prints the
    affinity matrix, the gradient cosine matrix, the conflict fraction and
    the best grouping into 2 .. T-1 trunks; writes `analysis.png` (the
    heatmaps) and `analysis.json` in `output_dir`.

    Args:
        model: a compiled `MultiTaskModel`.
        data: a `tf.data.Dataset` of training batches, or one batch.
        output_dir: where to write the files; None writes nothing.
        steps: training steps of the run.
        interval: measure every `interval` steps.
        learning_rate: lookahead step size (default the optimizer's).
        restore: restore the weights and optimizer state afterwards.
        verbose: 1 prints the report.

    Returns:
        The details dict of `task_affinity(..., return_details=True)`, plus
        `groups` (`{k: (groups, score)}`) and `png` (the heatmap's path).

    Example:

    ```python
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    report = analyse(model, train, "runs/shapes", steps=50)
    report["affinity"], report["conflict_fraction"]
    ```
    """
    saved = None
    if restore:
        for optimizer in _optimizers(model):
            if not optimizer.built:
                optimizer.build(model.trainable_variables)
        saved = ([v.numpy() for v in model.variables],
                 [[v.numpy() for v in o.variables] for o in _optimizers(model)])
    try:
        details = task_affinity(model, data, steps=steps, interval=interval,
                                learning_rate=learning_rate, train=True, return_details=True)
    finally:
        if saved is not None:
            for variable, value in zip(model.variables, saved[0]):
                variable.assign(value)
            for optimizer, values in zip(_optimizers(model), saved[1]):
                for variable, value in zip(optimizer.variables, values):
                    variable.assign(value)
    names = details["task_names"]
    details["groups"] = {k: propose_groups(details["affinity"], k, names)
                         for k in range(2, len(names))}
    details["png"] = None
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        details["png"] = plot_affinity(details["affinity"], names,
                                       os.path.join(output_dir, "analysis.png"),
                                       cosine=details["cosine"])
        with open(os.path.join(output_dir, "analysis.json"), "w") as file:
            json.dump({
                "task_names": names, "steps": steps, "interval": interval,
                "affinity": np.asarray(details["affinity"]).tolist(),
                "cosine": np.asarray(details["cosine"]).tolist(),
                "conflict_fraction": details["conflict_fraction"],
                "grad_norm": np.asarray(details["grad_norm"]).tolist(),
                "groups": {str(k): {"groups": g, "score": s}
                           for k, (g, s) in details["groups"].items()},
            }, file, indent=1, default=float)
    if verbose:
        print(f"\nTask affinity (TAG lookahead, {len(details['steps'])} measurements over {steps} "
              f"steps): row = task stepped on, column = task affected, > 0 helps")
        print(format_matrix(details["affinity"], names))
        print("\nCosine of the per-task gradients of the shared parameters:")
        print(format_matrix(details["cosine"], names, "{:+.2f}"))
        print(f"\nConflict fraction (pairs and steps with cosine < 0): "
              f"{details['conflict_fraction']:.2f}")
        for k, (groups, score) in details["groups"].items():
            print(f"Best {k} trunks: {groups} (total affinity {score:+.3f})")
        if details["png"]:
            print(f"Heatmaps in {details['png']}")
    return details


__all__ = [
    "analyse", "format_matrix", "gradient_statistics", "grouping_score", "lookahead_affinity",
    "partitions", "plot_affinity", "plot_gradient_conflict", "plot_task_matrix",
    "propose_groups", "task_affinity", "task_gradients",
]
