"""Plots saved as files: training curves, comparisons, predictions, task relatedness.

Every plot is a matplotlib `Figure` on its own Agg canvas (`figures.py`):
no `pyplot`, no `matplotlib.use`, so plotting never changes the backend of
the process that calls it. matplotlib is an optional dependency, imported
inside the functions.

- Training curves (`curves.py`): `plot_history` (task losses and
  weights), `plot_task_curves` (every metric of every task),
  `plot_weights` (the weight trajectories).
- Comparisons (`comparisons.py`): `plot_comparison` (multi-task vs
  single-task), `plot_efficiency` (parameters, FLOPs, images/s),
  `plot_leaderboard` (delta-m over seeds).
- Predictions (`predictions.py`): `save_prediction_png` (one image) and
  `plot_prediction_gallery` (a grid), both drawn by `drawing.py`: box
  edges on pixel borders (`xyxy` pixels as in `keras.utils.bounding_boxes`),
  one `tab10` palette, unlabelled mask pixels (255 or negative) in one colour.
- Task relatedness (`analysis.py`): `plot_task_matrix`, `plot_affinity`,
  `plot_gradient_conflict` (also exported by `keras_mtl.analysis`).

Example:

>>> import os, tempfile
>>> from keras_mtl import plotting
>>> logs = {"label_loss": [1.0, 0.7], "weight/label": [1.0, 0.9]}
>>> path = plotting.plot_history(logs, os.path.join(tempfile.mkdtemp(), "curves.png"))
>>> os.path.basename(path)
'curves.png'
"""

from keras_mtl.plotting.analysis import plot_affinity, plot_gradient_conflict, plot_task_matrix
from keras_mtl.plotting.comparisons import plot_comparison, plot_efficiency, plot_leaderboard
from keras_mtl.plotting.curves import plot_history, plot_task_curves, plot_weights
from keras_mtl.plotting.drawing import draw_boxes, draw_image, draw_mask
from keras_mtl.plotting.figures import new_figure, save
from keras_mtl.plotting.predictions import plot_prediction_gallery, save_prediction_png

__all__ = [
    "draw_boxes", "draw_image", "draw_mask", "new_figure", "plot_affinity", "plot_comparison",
    "plot_efficiency", "plot_gradient_conflict", "plot_history", "plot_leaderboard",
    "plot_prediction_gallery", "plot_task_curves", "plot_task_matrix", "plot_weights", "save",
    "save_prediction_png",
]
