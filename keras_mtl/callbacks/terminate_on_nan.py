"""Stop training at the first non-finite task loss, naming the task and the step."""

import math

import keras


class NonFiniteLossError(RuntimeError):
    """Raised by `TerminateOnNonFiniteLoss`; says which task, epoch and step.

    Attributes:
        task: the task whose loss became non-finite (`None`: the total loss
            did, every task loss being finite, e.g. a weighting or a
            regularisation loss).
        step: the global training step (1-based, counted from the start of
            training, including steps of previous `fit` calls restored by a
            backup) at which it happened.
        epoch: the epoch (0-based) of that step.
        value: the non-finite value (`nan`, `inf` or `-inf`).
    """

    def __init__(self, message, task=None, step=None, epoch=None, value=None):
        super().__init__(message)
        self.task, self.step, self.epoch, self.value = task, step, epoch, value


class TerminateOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training when a task's loss (or the total loss) becomes NaN or infinite.

    Checks the logs of every training batch: each task's `<task>_loss` of a
    `MultiTaskModel` (its running mean over the epoch, which turns
    non-finite at the first non-finite batch loss and stays so), then `loss`.
    The message names the task and the global step, e.g.
    "Task 'mask' loss became NaN at step 13 (epoch 2, batch 4); training
    stopped. ...".

    Keeping the last good checkpoint: with `raise_error=True` (the default)
    the callback raises `NonFiniteLossError` from `on_train_batch_end`, so
    no later callback runs for that batch or for the rest of the training:
    a `ModelCheckpoint` does not write the diverged weights at the end of
    the epoch and a `BackupAndRestore` neither saves them nor deletes its
    backup at the end of training, so the last checkpoint written before the
    failure is kept. Put this callback *first* in the `callbacks` list, so it
    also runs before a checkpoint that saves every N batches. With
    `raise_error=False` it prints the message and sets
    `model.stop_training` (a graceful stop: `on_epoch_end` and
    `on_train_end` of every callback still run, so a `ModelCheckpoint`
    without `save_best_only` would write the diverged weights).

    Note: under `mixed_float16` the `LossScaleOptimizer` skips steps whose
    *gradients* overflow; a non-finite *loss* is still an error.

    Args:
        raise_error: raise `NonFiniteLossError` (default) instead of a
            graceful stop.
        task_names: the task names to check; default: the model's tasks
            (`model.task_names`), or every log key ending in `_loss`.
        verbose: print the message (also when raising).

    Attributes:
        error: the `NonFiniteLossError` describing the failure, or `None`.

    Example:

    ```python
    callbacks = [TerminateOnNonFiniteLoss(),
                 keras.callbacks.ModelCheckpoint("ckpt.weights.h5", save_weights_only=True)]
    try:
        model.fit(data, epochs=10, callbacks=callbacks)
    except NonFiniteLossError as error:
        print(error.task, error.step)       # ckpt.weights.h5 holds the last good epoch
    ```
    """

    def __init__(self, raise_error=True, task_names=None, verbose=1):
        super().__init__()
        self.raise_error = bool(raise_error)
        self.task_names = None if task_names is None else list(task_names)
        self.verbose = verbose
        self.error = None
        self._epoch = 0
        self._step = 0

    def on_train_begin(self, logs=None):
        self.error = None
        optimizer = getattr(self.model, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        self._step = int(keras.ops.convert_to_numpy(iterations)) if iterations is not None else 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _names(self, logs):
        names = self.task_names or getattr(self.model, "task_names", None)
        if names is None:
            names = [key[:-len("_loss")] for key in logs if key.endswith("_loss")]
        return list(names)

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if not logs:  # e.g. a batch skipped by a mid-epoch resume
            return
        culprit, value = None, None
        for name in self._names(logs):
            loss = logs.get(f"{name}_loss")
            if loss is not None and not math.isfinite(float(loss)):
                culprit, value = name, float(loss)
                break
        if culprit is None:
            loss = logs.get("loss")
            if loss is None or math.isfinite(float(loss)):
                return
            value = float(loss)
        what = f"Task '{culprit}' loss" if culprit else "The total loss (every task loss finite)"
        kind = "NaN" if math.isnan(value) else ("+inf" if value > 0 else "-inf")
        message = (
            f"{what} became {kind} at step {self._step} (epoch {self._epoch + 1}, batch "
            f"{batch + 1}); training stopped. The last checkpoint written before this step is "
            f"kept. Lower the learning rate, clip gradients (clipnorm), check that task's "
            f"targets, or use mixed_float16 loss scaling."
        )
        self.error = NonFiniteLossError(message, task=culprit, step=self._step,
                                        epoch=self._epoch, value=value)
        if self.verbose:
            print(message, flush=True)
        if self.raise_error:
            raise self.error
        self.model.stop_training = True
