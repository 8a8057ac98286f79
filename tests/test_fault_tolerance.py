"""Fault tolerance: a run killed mid-epoch resumes to the uninterrupted run's weights;
a non-finite loss stops training, names the task and step, and keeps the last good
checkpoint; checkpoints carry the weighting's learned state."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import keras_mtl as mtl
from keras_mtl.callbacks import BackupAndRestore, NonFiniteLossError, TerminateOnNonFiniteLoss
from keras_mtl.data import shapes

# Trains micro_resnet on 6 batches per epoch, 3 epochs, deterministically. Modes:
#   train <weighting> <dir> <marker>: backs up (ours every 2 batches, Keras' every epoch),
#       writes <marker> after global batch 9 (epoch 2, batch 3) and sleeps: the parent
#       kills it there, one batch after our last backup and mid-epoch for both.
#   resume <weighting> <dir> <names>: resumes from the backups named ("ours", "keras"),
#       then trains without interruption; prints the largest differences as JSON.
SCRIPT = r'''
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf
tf.config.experimental.enable_op_determinism()
import keras
import keras_mtl as mtl
from keras_mtl.callbacks import BackupAndRestore
from keras_mtl.data import shapes

STEPS, EPOCHS = 6, 3

def build(weighting):
    keras.utils.set_random_seed(0)
    config = {"dwa": {"steps_per_epoch": STEPS, "temperature": 2.0}, "famo": {},
              "gradvac": {"seed": 3}, "rlw": {"seed": 3}}[weighting]
    model = mtl.build_mtl([mtl.tasks.Classification("label", 3), mtl.tasks.Segmentation("mask", 4)],
                          trunk="micro_resnet", weights=None, input_shape=(32, 32, 3),
                          weighting=mtl.weighting.get(weighting, **config))
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    return model

def data():  # finite, unshuffled: every epoch reads the same batches
    return shapes.make_dataset(STEPS * 4, image_size=32, batch_size=4, seed=0,
                               tasks=["label", "mask"], cache=True)

class KillPoint(keras.callbacks.Callback):
    def __init__(self, marker):
        self.marker, self.seen = marker, 0
    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == STEPS + 3:
            open(self.marker, "w").write("ready")
            time.sleep(600)

def state(model):
    return ([np.asarray(v) for v in model.weights],
            {v.path: np.asarray(v) for v in model.weighting.variables})

def diff(a, b):
    weights = max(float(np.max(np.abs(x - y))) for x, y in zip(a[0], b[0]))
    weighting = max(float(np.max(np.abs(a[1][k] - b[1][k]), initial=0.0)) for k in a[1])
    return weights, weighting

mode, weighting, folder = sys.argv[1:4]
ours, theirs = os.path.join(folder, "ours"), os.path.join(folder, "keras")
if mode == "train":
    model = build(weighting)
    model.fit(data(), epochs=EPOCHS, verbose=0, callbacks=[
        BackupAndRestore(ours, save_freq=2),
        keras.callbacks.BackupAndRestore(theirs, save_freq="epoch"),
        KillPoint(sys.argv[4])])
    print("NOT KILLED")
else:
    resumed = {}
    callbacks = {"ours": lambda: BackupAndRestore(ours, save_freq=2),
                 "keras": lambda: keras.callbacks.BackupAndRestore(theirs, save_freq="epoch")}
    for name in sys.argv[4].split(","):
        callback = callbacks[name]()
        keras.backend.clear_session()
        model = build(weighting)
        restored = callback.latest() if name == "ours" else None
        model.fit(data(), epochs=EPOCHS, verbose=0, callbacks=[callback])
        resumed[name] = (state(model), restored, int(model.optimizer.iterations))
    keras.backend.clear_session()
    model = build(weighting)
    model.fit(data(), epochs=EPOCHS, verbose=0)
    reference = state(model)
    out = {name: {"weights_weighting": diff(s, reference), "restored": r, "iterations": i}
           for name, (s, r, i) in resumed.items()}
    out["reference_iterations"] = int(model.optimizer.iterations)
    out["weighting_variables"] = sorted(reference[1])
    out["backups_left"] = {name: os.path.exists(os.path.join(folder, name)) for name in resumed}
    print("RESULT " + json.dumps(out))
'''


def _kill_and_resume(tmp_path, weighting, names=("ours",)):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    marker = tmp_path / "ready"
    folder = str(tmp_path / "backups")
    process = subprocess.Popen(
        [sys.executable, str(script), "train", weighting, folder, str(marker)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 900  # generous: the slow suite often shares a loaded machine
        while not marker.exists():
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.time() < deadline, "the training run never reached the kill point"
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)  # mid-epoch, one batch after the last backup
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    result = subprocess.run([sys.executable, str(script), "resume", weighting, folder,
                             ",".join(names)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def _check_resumed(out):
    # Ours resumed from global batch 8 = epoch 2 (index 1), batch 2 of 6.
    assert out["ours"]["restored"]["epoch"] == 1
    assert out["ours"]["restored"]["batch"] == 2
    assert out["ours"]["restored"]["total_batches"] == 8
    for name in out["backups_left"]:  # Keras' own callback resumes at the epoch boundary
        weights, weighting = out[name]["weights_weighting"]
        assert weights <= 1e-6, (name, weights)
        assert weighting <= 1e-6, (name, weighting)
        assert out[name]["iterations"] == out["reference_iterations"] == 18
    assert not any(out["backups_left"].values())  # deleted after a complete run


def test_killed_mid_epoch_resumes_to_the_same_weights_and_weighting_state(tmp_path):
    out = _kill_and_resume(tmp_path, "dwa")  # DWA: per-epoch loss averages, step counter
    _check_resumed(out)
    names = " ".join(out["weighting_variables"])
    for state in ("last_average", "previous_average", "loss_sum", "step"):
        assert state in names


@pytest.mark.slow
@pytest.mark.parametrize("weighting", ["famo", "gradvac", "rlw"])
def test_killed_mid_epoch_resumes_with_more_weightings(tmp_path, weighting):
    # Keras' own BackupAndRestore(save_freq="epoch") also restores the weighting's state
    # (it resumes from the end of the last complete epoch).
    _check_resumed(_kill_and_resume(tmp_path, weighting, names=("ours", "keras")))


# --- in-process tests ------------------------------------------------------------------
def _model(weighting="famo"):
    return mtl.build_mtl([mtl.tasks.Classification("label", 3), mtl.tasks.Segmentation("mask", 4)],
                         trunk="micro_resnet", weights=None, input_shape=(32, 32, 3),
                         weighting=weighting)


def _data(batches=4):
    return shapes.make_dataset(batches * 4, image_size=32, batch_size=4, seed=0,
                               tasks=["label", "mask"], cache=True)


class _Poison(keras.callbacks.Callback):
    """Sets the mask head's kernel to NaN after batch `batch` of epoch `epoch`."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, 0
        self.epoch_end_weights = []

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_end_weights.append([np.asarray(v) for v in self.model.weights])

    def on_train_batch_end(self, batch, logs=None):
        if (self.current, batch) == (self.epoch, self.batch):
            kernel = self.model.get_layer("mask_logits").kernel
            kernel.assign(np.full(kernel.shape, np.nan, "float32"))


def test_non_finite_loss_names_task_and_step_and_keeps_last_good_checkpoint(tmp_path):
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    checkpoint = str(tmp_path / "last.weights.h5")
    poison = _Poison(epoch=1, batch=1)  # the mask loss is NaN at epoch 2, batch 3: step 7
    backup = BackupAndRestore(str(tmp_path / "backup"), save_freq=2)
    with pytest.raises(NonFiniteLossError, match=r"Task 'mask' loss became NaN at step 7 "
                                                 r"\(epoch 2, batch 3\)") as info:
        model.fit(_data(), epochs=3, verbose=0, callbacks=[
            TerminateOnNonFiniteLoss(verbose=0), backup,
            keras.callbacks.ModelCheckpoint(checkpoint, save_weights_only=True), poison])
    assert (info.value.task, info.value.step, info.value.epoch) == ("mask", 7, 1)
    # The checkpoint of epoch 1 is kept, not overwritten by diverged weights.
    assert len(poison.epoch_end_weights) == 1
    fresh = _model()
    fresh.load_weights(checkpoint)
    for got, expected in zip(fresh.weights, poison.epoch_end_weights[0]):
        np.testing.assert_array_equal(np.asarray(got), expected)
        assert np.all(np.isfinite(expected))
    # The backup (after step 6, before the poison) is kept too, and finite.
    latest = backup.latest()
    assert latest["total_batches"] == 6 and latest["epoch"] == 1 and latest["batch"] == 2
    fresh.load_weights(latest["path"])
    assert all(np.all(np.isfinite(np.asarray(v))) for v in fresh.weights)


def test_graceful_stop_on_total_loss(tmp_path):
    model = _model("equal")
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    stop = TerminateOnNonFiniteLoss(raise_error=False, verbose=0)
    logs_after = []

    class Fake(keras.callbacks.Callback):  # a finite task loss but a NaN total
        def on_train_batch_end(self, batch, logs=None):
            logs["loss"] = float("inf") if batch == 1 else logs["loss"]

    history = model.fit(_data(), epochs=2, verbose=0, callbacks=[
        Fake(), stop, keras.callbacks.LambdaCallback(on_epoch_end=lambda e, l: logs_after.append(e))])
    assert stop.error is not None and stop.error.task is None and stop.error.step == 2
    assert "total loss" in str(stop.error) and "+inf" in str(stop.error)
    assert len(history.history["loss"]) == 1 and logs_after == [0]


def test_checkpoints_carry_the_weighting_state(tmp_path):
    model = _model("famo")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(_data(2), epochs=1, verbose=0)
    logits = np.asarray(model.weighting.logits)
    assert np.any(logits != 0)
    path = str(tmp_path / "model.weights.h5")
    model.save_weights(path)
    fresh = _model("famo")
    fresh.compile(optimizer=keras.optimizers.Adam(1e-3))
    fresh.optimizer.build(fresh.trainable_variables)
    fresh.load_weights(path)
    for got, expected in zip(fresh.weighting.variables, model.weighting.variables):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(np.asarray(loaded.weighting.logits), logits)


def test_checkpoints_carry_the_seed_generator_state(tmp_path):
    # Keras saves a layer's weights but not its seed generators: RLW's draws must go on
    # where they stopped after a restore, in `.weights.h5` and `.keras` files alike.
    model = _model("rlw")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(_data(2), epochs=1, verbose=0)
    (state,) = model.weighting.seed_states()
    saved = np.asarray(state)
    path = str(tmp_path / "model.weights.h5")
    model.save_weights(path)
    fresh = _model("rlw")
    fresh.compile(optimizer=keras.optimizers.Adam(1e-3))
    fresh.optimizer.build(fresh.trainable_variables)
    assert not np.array_equal(np.asarray(fresh.weighting.seed_states()[0]), saved)
    fresh.load_weights(path)
    np.testing.assert_array_equal(np.asarray(fresh.weighting.seed_states()[0]), saved)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(np.asarray(loaded.weighting.seed_states()[0]), saved)


def test_backup_and_restore_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="save_freq"):
        BackupAndRestore(str(tmp_path), save_freq=0)
    with pytest.raises(ValueError, match="data"):
        BackupAndRestore(str(tmp_path), data="shuffled")
    assert BackupAndRestore(str(tmp_path / "none")).latest() is None


class _Interrupted(Exception):
    pass


@pytest.mark.slow
def test_resume_in_process_after_an_exception_matches_uninterrupted(tmp_path):
    """`data="continuous"`: a repeated dataset with steps_per_epoch, resumed mid-epoch."""
    def run(stop_at=None, backup_dir=None):
        keras.utils.set_random_seed(0)
        model = _model("dwa")
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
        data = _data(3).repeat()
        callbacks = []
        if backup_dir:
            callbacks.append(BackupAndRestore(backup_dir, save_freq=1, data="continuous"))
        if stop_at:
            class Stop(keras.callbacks.Callback):
                seen = 0

                def on_train_batch_end(self, batch, logs=None):
                    Stop.seen += 1
                    if Stop.seen == stop_at:
                        raise _Interrupted

            with pytest.raises(_Interrupted):
                model.fit(data, epochs=2, steps_per_epoch=4, verbose=0,
                          callbacks=callbacks + [Stop()])
            keras.utils.set_random_seed(0)
            model = _model("dwa")
            model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
        model.fit(data, epochs=2, steps_per_epoch=4, verbose=0, callbacks=callbacks)
        return [np.asarray(v) for v in model.weights]

    reference = run()
    resumed = run(stop_at=6, backup_dir=str(tmp_path / "backup"))  # epoch 2, batch 2
    assert max(np.max(np.abs(a - b)) for a, b in zip(reference, resumed)) <= 1e-6
