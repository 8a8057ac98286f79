"""Each task's training loss over windows of steps: per-task training curves."""

import keras

from keras_mtl.callbacks.step_points import StepPointsCallback


class TaskLossCurve(StepPointsCallback):
    """Keeps each task's mean training loss over the steps between a few points.

    `fit` logs each task's loss as a running mean since the epoch began, so
    one long epoch (the leaderboard trains `epochs=1`) shows the whole run's
    average, not where a task ended. At `points` evenly spaced steps this
    callback reads each task's loss tracker (its sum and its count of
    labelled batches) and keeps the mean over the window since the previous
    point: a batch without a task's labels does not count toward that task's
    window. A task with no labelled batch in a window is left out of that
    point.

    Comparing the last window of a multi-task run with that of the task's
    single-task run tells under-fitting (a higher training loss) from
    over-fitting (the same training loss and a worse validation metric).

    Args:
        total_steps: the steps `fit` will run (epochs x steps per epoch).
        points: how many evenly spaced steps to record (at least 1); the
            last step is always among them.

    Attributes:
        curve: `[(step, {task: mean loss over the window}), ...]`, steps
            counted from 1.

    Example:

    >>> model = keras_mtl.build_mtl([Classification("a", 2)], trunk="micro_resnet",
    ...                             weights=None, input_shape=(32, 32, 3))
    >>> model.compile(optimizer="sgd")
    >>> curve = TaskLossCurve(total_steps=4, points=2)
    >>> history = model.fit(np.zeros((8, 32, 32, 3)), {"a": np.zeros(8, "int32")},
    ...                     batch_size=2, verbose=0, callbacks=[curve])
    >>> [(step, sorted(losses)) for step, losses in curve.curve]
    [(2, ['a']), (4, ['a'])]
    """

    def __init__(self, total_steps, points=9):
        super().__init__(total_steps, points)
        self.curve = []
        self._previous = {}  # {task: (sum, count)} at the last point of this epoch

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.curve = []

    def on_epoch_begin(self, epoch, logs=None):
        self._previous = {}  # fit resets the trackers every epoch

    def record(self, step, logs):
        losses = {}
        for name, tracker in zip(self.model.task_names, self.model.task_loss_trackers):
            total = float(keras.ops.convert_to_numpy(tracker.total))
            count = float(keras.ops.convert_to_numpy(tracker.count))
            previous_total, previous_count = self._previous.get(name, (0.0, 0.0))
            if count < previous_count:  # the trackers were reset since the last point
                previous_total, previous_count = 0.0, 0.0
            if count > previous_count:
                losses[name] = (total - previous_total) / (count - previous_count)
            self._previous[name] = (total, count)
        if losses:
            self.curve.append((step, losses))
