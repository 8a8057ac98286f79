"""Record the task weights a weighting used, at a few steps of training."""

import math

import keras


class TaskWeightTrace(keras.callbacks.Callback):
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
        super().__init__()
        if int(total_steps) < 1 or int(points) < 1:
            raise ValueError(f"TaskWeightTrace needs total_steps >= 1 and points >= 1; got "
                             f"total_steps={total_steps}, points={points}.")
        total_steps, points = int(total_steps), min(int(points), int(total_steps))
        self.steps = sorted({math.ceil(total_steps * (i + 1) / points) for i in range(points)})
        self.trace = []
        self._next = 0  # index in self.steps of the next step to record

    def on_train_begin(self, logs=None):
        self.trace, self._next = [], 0

    def on_train_batch_end(self, batch, logs=None):
        if self._next >= len(self.steps):
            return
        # The optimizer's count, not the batch index: with steps_per_execution = k the
        # callback runs every k steps, and a target step between two calls is recorded late.
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if step < self.steps[self._next]:
            return
        while self._next < len(self.steps) and self.steps[self._next] <= step:
            self._next += 1
        weights = {key[len("weight/"):]: float(keras.ops.convert_to_numpy(value))
                   for key, value in (logs or {}).items() if key.startswith("weight/")}
        if weights:
            self.trace.append((step, weights))
