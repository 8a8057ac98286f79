"""Back up training every N steps and resume a killed run exactly, mid-epoch included."""

import json
import os
import shutil

import keras

_LATEST = "latest.json"
DATA_MODES = ("epoch", "continuous")


class BackupAndRestore(keras.callbacks.Callback):
    """Backs up the training state and resumes an interrupted `fit` where it stopped.

    Like `keras.callbacks.BackupAndRestore`, with two differences that make
    a run killed *mid-epoch* (SIGKILL, pre-emption) and restarted end with
    the same weights as an uninterrupted run:

    - Resume at the step, not at the epoch. Keras' callback (3.15) records
      the epoch only: after a kill mid-epoch the restarted run replays the
      whole epoch on top of weights that already saw part of it. Here the
      restarted `fit` starts at the interrupted epoch and *skips* the
      batches already trained (they are read from the data and dropped,
      without a train step), so every later batch meets the same weights.
    - Atomic backups. Each backup is written to its own folder
      (`step-<N>/`: `model.weights.h5` and `state.json`), then
      `latest.json` is replaced atomically (`os.replace`) to point at it;
      a kill at any moment leaves a complete, consistent backup.

    The backup is `model.save_weights`: the model's variables (trunk,
    heads, BatchNorm statistics), the optimizer's (iterations, moments, loss
    scale) and the weighting's own state (DWA loss averages, FAMO logits
    and Adam moments, GradVac's EMA, uncertainty log-variances, the seed
    generators of RLW/PCGrad ...), since a weighting is a layer of the model.

    The data must give the same batches in the restarted run:
    - `data="epoch"` (default): each epoch iterates the data from its start
      (a finite `tf.data.Dataset`, arrays, no `steps_per_epoch`); the order
      must not depend on how often the data was iterated before (no
      `shuffle(reshuffle_each_iteration=True)` unless seeded per epoch).
      The first `b` batches of the interrupted epoch are skipped.
    - `data="continuous"`: one iterator runs across epochs (a repeated
      dataset with `steps_per_epoch`): every batch trained so far is
      skipped (a deterministic, seeded shuffle before `repeat()` is fine).
    Random ops inside the model need seeded layers; on CPU, call
    `tf.config.experimental.enable_op_determinism()` for bit-exact runs.

    The logged metrics of the resumed epoch cover its trained batches only.
    The callback also resumes when `fit` is called again in the same
    process after an exception (e.g. `TerminateOnNonFiniteLoss`).

    Args:
        backup_dir: folder of the backups (created).
        save_freq: `"epoch"` or an int: back up every `save_freq` batches
            (counted over the whole training, skipped batches included).
        delete_checkpoint: delete `backup_dir` when training ends normally.
        data: `"epoch"` or `"continuous"`, see above.
        keep: how many backups to keep (>= 1); older `step-<N>` folders are
            removed after a new one is in place.

    Example:

    ```python
    backup = BackupAndRestore("/tmp/backup", save_freq=50)
    model.fit(train, epochs=10, callbacks=[backup])   # killed, then run again: resumes
    ```
    """

    def __init__(self, backup_dir, save_freq="epoch", delete_checkpoint=True, data="epoch",
                 keep=1):
        super().__init__()
        if not backup_dir:
            raise ValueError("BackupAndRestore needs a `backup_dir`.")
        if save_freq != "epoch" and not (isinstance(save_freq, int) and save_freq >= 1):
            raise ValueError(f"`save_freq` must be 'epoch' or an int >= 1, got {save_freq!r}.")
        if data not in DATA_MODES:
            raise ValueError(f"`data` must be one of {DATA_MODES}, got {data!r}.")
        if int(keep) < 1:
            raise ValueError(f"`keep` must be >= 1, got {keep}.")
        self.backup_dir = str(backup_dir)
        self.save_freq = save_freq
        self.delete_checkpoint = bool(delete_checkpoint)
        self.data = data
        self.keep = int(keep)
        self.restored = None  # the state restored at the start of the last `fit`, if any

    # --- state ---------------------------------------------------------------------
    def latest(self):
        """The state dict of the latest complete backup, or `None`.

        Keys: `epoch` (the epoch to resume), `batch` (batches of that epoch
        already done), `total_batches` (batches done in all), `path` (the
        weights file).
        """
        pointer = os.path.join(self.backup_dir, _LATEST)
        if not os.path.exists(pointer):
            return None
        with open(pointer) as file:
            folder = json.load(file)["folder"]
        with open(os.path.join(self.backup_dir, folder, "state.json")) as file:
            state = json.load(file)
        state["path"] = os.path.join(self.backup_dir, folder, "model.weights.h5")
        return state

    def _save(self):
        folder = f"step-{self._total_batches:09d}"
        target = os.path.join(self.backup_dir, folder)
        if os.path.exists(os.path.join(self.backup_dir, _LATEST)) and \
                self.latest()["total_batches"] == self._total_batches:
            return  # already backed up at this step
        temporary = target + ".tmp"
        shutil.rmtree(temporary, ignore_errors=True)
        os.makedirs(temporary)
        self.model.save_weights(os.path.join(temporary, "model.weights.h5"))
        state = {"epoch": self._epoch, "batch": self._batch, "total_batches": self._total_batches}
        with open(os.path.join(temporary, "state.json"), "w") as file:
            json.dump(state, file)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(temporary, target)
        pointer = os.path.join(self.backup_dir, _LATEST + ".tmp")
        with open(pointer, "w") as file:
            json.dump({"folder": folder}, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(pointer, os.path.join(self.backup_dir, _LATEST))
        backups = sorted(name for name in os.listdir(self.backup_dir)
                         if name.startswith("step-") and not name.endswith(".tmp"))
        for name in backups[:-self.keep]:
            shutil.rmtree(os.path.join(self.backup_dir, name), ignore_errors=True)

    # --- callback ------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        os.makedirs(self.backup_dir, exist_ok=True)
        self._epoch, self._batch, self._total_batches, self._since_save = 0, 0, 0, 0
        self.restored = state = self.latest()
        if state is None:
            return
        if not self.model.built:
            raise ValueError("BackupAndRestore needs a built model (call it on a batch first).")
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        self.model.load_weights(state["path"])
        self._epoch, self._batch = state["epoch"], state["batch"]
        self._total_batches = state["total_batches"]
        self.model._initial_epoch = self._epoch  # read by `fit` right after on_train_begin
        # The restarted `fit` begins the interrupted epoch at its first batch: its first
        # `batch` batches were trained already. With one iterator across epochs, the
        # batches of the earlier epochs must be dropped first as well.
        drop = self._total_batches - self._batch if self.data == "continuous" else 0
        if drop or self._batch:
            self._skip(drop, self._batch)

    def _skip(self, drop, skipped):
        """Drops `drop` batches, then turns the calls of the first `skipped`
        batches into no-ops that read and drop their batches."""
        model = self.model
        train_function = model.train_function
        per_call = max(int(getattr(model, "steps_per_execution", 1) or 1), 1)
        state = {"drop": drop + skipped % per_call, "calls": skipped // per_call}

        def skipping(iterator):
            for _ in range(state["drop"]):
                next(iterator)
            state["drop"] = 0
            if state["calls"] > 0:
                state["calls"] -= 1
                for _ in range(per_call):
                    next(iterator)
                if state["calls"] == 0:
                    model.train_function = train_function
                return {}
            model.train_function = train_function
            return train_function(iterator)

        model.train_function = skipping

    def on_epoch_begin(self, epoch, logs=None):
        if epoch != self._epoch:
            self._epoch, self._batch = epoch, 0

    def on_train_batch_end(self, batch, logs=None):
        done = max(batch + 1 - self._batch, 0)  # 0 for a skipped batch: counted already
        self._batch = max(self._batch, batch + 1)
        self._total_batches += done
        self._since_save += done
        if self.save_freq != "epoch" and self._since_save >= self.save_freq:
            self._since_save = 0
            self._save()

    def on_epoch_end(self, epoch, logs=None):
        self._epoch, self._batch = epoch + 1, 0
        if self.save_freq == "epoch":
            self._save()

    def on_train_end(self, logs=None):
        # Not called when `fit` raises (e.g. a non-finite loss): the backup is kept.
        if self.delete_checkpoint:
            shutil.rmtree(self.backup_dir, ignore_errors=True)
