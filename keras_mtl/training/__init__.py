"""How a `MultiTaskModel` trains: losses, the train steps, the training controls.

- `losses`: per-task losses and presence of a batch; global-batch losses
  under a `tf.distribute` strategy.
- `forward`: the forward pass cut at the shared features (`FeatureSplit`).
- `steps`: the loss step, the clipped loss step and the gradient-balanced
  step, each returning a `StepResult`; `select_step(model)` picks one.
- `controls`: the `compile` controls (trunk optimizer, freezing, task
  curriculum, per-task clipping) and their callback.
- `updates`: how gradients reach the variables under those controls.
- `schedules`: `trunk_learning_rate`, `ScaledSchedule`.

Nothing here imports `keras_mtl.model`: the steps read only public
attributes of the model they are given.
"""

from keras_mtl.training.controls import TrainingControls, TrainingControlsCallback
from keras_mtl.training.forward import FeatureSplit
from keras_mtl.training.schedules import ScaledSchedule, trunk_learning_rate
from keras_mtl.training.steps import (StepResult, clipped_loss_step, gradient_balanced_step,
                                      loss_step, select_step)

__all__ = [
    "FeatureSplit", "ScaledSchedule", "StepResult", "TrainingControls",
    "TrainingControlsCallback", "clipped_loss_step", "gradient_balanced_step", "loss_step",
    "select_step", "trunk_learning_rate",
]
