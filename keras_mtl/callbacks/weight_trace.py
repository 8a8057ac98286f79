"""Record the task weights a weighting used, at a few steps of training."""

import keras

from keras_mtl.callbacks.step_points import StepPointsCallback


class TaskWeightTrace(StepPointsCallback):
    """Keeps the `weight/<task>` values of a `MultiTaskModel` at chosen steps.

    A multi-task model logs the weights of its last step as `weight/<task>`;
    `fit`'s history keeps one value per epoch. This callback keeps them at
    `points` evenly spaced training steps (and the last), which is enough to
    see whether a weighting's weights settle, drift or grow without bound
    (FairGrad's weights are inverse gradient norms and grow as a task is
    learnt; `calibrated` holds its weights after the calibration window).

    Args:
        total_steps: the steps `fit` will run (epochs x steps per epoch).
        points: how many evenly spaced steps to record (at least 1); the
            last step is always among them.

    Attributes:
        trace: `[(step, {task: weight}), ...]`, steps counted from 1.

    Example:

    >>> trace = TaskWeightTrace(total_steps=100, points=4)
    >>> trace.steps
    [25, 50, 75, 100]
    """

    def __init__(self, total_steps, points=9):
        super().__init__(total_steps, points)
        self.trace = []

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.trace = []

    def record(self, step, logs):
        weights = {key[len("weight/"):]: float(keras.ops.convert_to_numpy(value))
                   for key, value in logs.items() if key.startswith("weight/")}
        if weights:
            self.trace.append((step, weights))
