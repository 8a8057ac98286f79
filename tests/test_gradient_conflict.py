"""GradientConflictMonitor (issue 10): cosines and norms by hand, logs, TensorBoard, plots."""

import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import keras_mtl
from keras_mtl.analysis import plot_gradient_conflict
from keras_mtl.callbacks import GradientConflictMonitor
from keras_mtl.tasks import Classification


def tiny_model():
    images = keras.Input((32, 32, 3))
    x = layers.Rescaling(1 / 255.0)(images)
    p2 = layers.Conv2D(4, 3, strides=4, padding="same", name="trunk_conv")(x)  # (B, 8, 8, 4)
    p2 = layers.BatchNormalization(name="trunk_bn")(p2)  # its statistics must survive measuring
    p3 = layers.AveragePooling2D(2)(p2)
    p4 = layers.AveragePooling2D(2)(p3)
    p5 = layers.Dense(4, name="trunk_dense")(layers.AveragePooling2D(2)(p4))  # (B, 1, 1, 4)
    trunk = keras.Model(images, {"P2": p2, "P3": p3, "P4": p4, "P5": p5}, name="tiny_trunk")
    tasks = [Classification("a", 3), Classification("b", 2), Classification("c", 2)]
    return keras_mtl.MultiTaskModel(trunk, tasks, weighting="equal")


def batch(num=8):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (num, 32, 32, 3)).astype("uint8")
    targets = {"a": rng.integers(0, 3, num).astype("int32"),
               "b": rng.integers(0, 2, num).astype("int32"),
               "c": rng.integers(0, 2, num).astype("int32")}
    return images, targets


def hand_gradients(model, images, targets, on):
    rows = []
    for index, name in enumerate(model.task_names):
        with tf.GradientTape() as tape:
            if on == "features":
                leaves = [tf.stop_gradient(f)
                          for f in keras.tree.flatten(model.trunk(images, training=True))]
                tape.watch(leaves)
                outputs, sources = model.feature_split.heads_model(leaves, training=True), leaves
            else:
                outputs, sources = model(images, training=True), model.trunk.trainable_variables
            losses, _ = model.task_losses({name: targets[name]}, outputs, {})
            loss = losses[index]
        grads = tape.gradient(loss, sources)
        rows.append(np.concatenate([np.zeros(int(np.prod(s.shape))) if g is None
                                    else g.numpy().ravel() for g, s in zip(grads, sources)]))
    return np.stack(rows)


@pytest.mark.parametrize("on", ["parameters", "features"])
def test_cosine_and_norms_match_hand_computation(on):
    images, targets = batch()
    model = tiny_model()
    model.compile(optimizer="sgd")
    before = [v.numpy().copy() for v in model.variables]
    monitor = GradientConflictMonitor((images, targets), on=on)
    monitor.set_model(model)
    result = monitor.measure()
    after = [v.numpy() for v in model.variables]
    for b, a in zip(before, after):  # BatchNorm statistics restored, nothing trained
        np.testing.assert_array_equal(b, a)

    rows = hand_gradients(model, images, targets, on)
    norms = np.linalg.norm(rows, axis=1)
    cosine = rows @ rows.T / np.outer(norms, norms)
    np.testing.assert_allclose(result["grad_norm"], norms, rtol=1e-4)
    np.testing.assert_allclose(result["cosine"], cosine, rtol=1e-4, atol=1e-5)
    assert result["cosine"].shape == (3, 3)


def test_absent_task_gives_nan_pairs():
    images, targets = batch()
    model = tiny_model()
    model.compile(optimizer="sgd")
    monitor = GradientConflictMonitor((images, {k: targets[k] for k in ("a", "b")}))
    monitor.set_model(model)
    result = monitor.measure()
    assert np.isnan(result["cosine"][0, 2]) and np.isnan(result["grad_norm"][2])
    assert np.isfinite(result["cosine"][0, 1])


def test_fit_logs_history_tensorboard_and_plot(tmp_path):
    images, targets = batch(16)
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    dataset = tf.data.Dataset.from_tensor_slices((images, targets)).batch(4)
    log_dir = str(tmp_path / "logs")
    monitor = GradientConflictMonitor(dataset, interval=3, log_dir=log_dir)
    history = model.fit(dataset, epochs=2, verbose=0, callbacks=[monitor]).history
    for key in ("conflict/a_b", "conflict/a_c", "conflict/b_c", "conflict_fraction/a_b",
                "conflict_fraction", "grad_norm/a", "grad_norm/c"):
        assert len(history[key]) == 2, key
    assert all(-1.0 <= v <= 1.0 for v in history["conflict/a_b"])
    # 4 steps per epoch, every 3: steps 1, 4, 7.
    assert [r["step"] for r in monitor.records] == [1, 4, 7]
    epoch_0 = [r["cosine"][0, 1] for r in monitor.records if r["epoch"] == 0]
    assert history["conflict/a_b"][0] == pytest.approx(np.mean(epoch_0), rel=1e-5)
    pairs_0 = [r["cosine"][i, j] for r in monitor.records if r["epoch"] == 0
               for i, j in ((0, 1), (0, 2), (1, 2))]
    assert history["conflict_fraction"][0] == pytest.approx(np.mean(np.less(pairs_0, 0)))
    events = glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))
    scalars = [(event.step, value.tag, float(tf.make_ndarray(value.tensor)))
               for path in events for event in tf.compat.v1.train.summary_iterator(path)
               for value in event.summary.value]
    assert [(step, v) for step, tag, v in scalars if tag == "conflict/a_b"] == [
        (r["step"], pytest.approx(float(r["cosine"][0, 1]))) for r in monitor.records]
    assert {tag for _, tag, _ in scalars} >= {"conflict_fraction", "grad_norm/b"}
    summary = monitor.summary()
    assert summary["cosine"].shape == (3, 3) and 0 <= summary["conflict_fraction"] <= 1

    path = plot_gradient_conflict(monitor, str(tmp_path / "conflict.png"))
    assert os.path.getsize(path) > 1000


def test_monitor_without_data_raises_at_train_begin():
    images, targets = batch()
    model = tiny_model()
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="no data"):
        model.fit(images, targets, batch_size=8, epochs=1, verbose=0,
                  callbacks=[GradientConflictMonitor()])
    with pytest.raises(ValueError, match="on"):
        GradientConflictMonitor(on="weights")
