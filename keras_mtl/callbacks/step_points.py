"""A callback base that acts at a few evenly spaced training steps."""

import math

import keras


class StepPointsCallback(keras.callbacks.Callback):
    """Calls `record(step, logs)` at `points` evenly spaced steps of training.

    The steps are counted from 1 by the optimizer's `iterations`, not by the
    batch index: with `steps_per_execution = k` the callback runs every k
    steps, and a target step between two calls is recorded at the next call.
    The last step is always among them.

    Args:
        total_steps: the steps `fit` will run (epochs x steps per epoch).
        points: how many evenly spaced steps to record (at least 1).

    Attributes:
        steps: the target steps, increasing.

    Example:

    >>> StepPointsCallback(total_steps=100, points=4).steps
    [25, 50, 75, 100]
    """

    def __init__(self, total_steps, points=9):
        super().__init__()
        if int(total_steps) < 1 or int(points) < 1:
            raise ValueError(f"{type(self).__name__} needs total_steps >= 1 and points >= 1; "
                             f"got total_steps={total_steps}, points={points}.")
        total_steps, points = int(total_steps), min(int(points), int(total_steps))
        self.steps = sorted({math.ceil(total_steps * (i + 1) / points) for i in range(points)})
        self._next = 0  # index in self.steps of the next step to record

    def on_train_begin(self, logs=None):
        self._next = 0

    def on_train_batch_end(self, batch, logs=None):
        if self._next >= len(self.steps):
            return
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if step < self.steps[self._next]:
            return
        while self._next < len(self.steps) and self.steps[self._next] <= step:
            self._next += 1
        self.record(step, logs or {})

    def record(self, step, logs):
        """Called at each target step (or the first call past it)."""
        raise NotImplementedError
