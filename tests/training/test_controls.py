"""Training controls (issue 10): trunk optimizer, trunk freezing, task curricula and per-task
gradient clipping, set in `MultiTaskModel.compile`.

The controls live in `keras_mtl.training.controls`, the updates they steer in
`keras_mtl.training.updates`.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import keras_mtl
from keras_mtl import training
from keras_mtl.training import controls as training_controls
from keras_mtl.tasks import Classification

LR = 0.1


def tiny_model(weighting="equal"):
    images = keras.Input((32, 32, 3))
    x = layers.Rescaling(1 / 255.0)(images)
    p2 = layers.Conv2D(4, 3, strides=4, padding="same", name="trunk_conv")(x)  # (B, 8, 8, 4)
    p3 = layers.AveragePooling2D(2)(p2)  # (B, 4, 4, 4)
    p4 = layers.AveragePooling2D(2)(p3)  # (B, 2, 2, 4)
    p5 = layers.Dense(4, name="trunk_dense")(layers.AveragePooling2D(2)(p4))  # (B, 1, 1, 4)
    trunk = keras.Model(images, {"P2": p2, "P3": p3, "P4": p4, "P5": p5}, name="tiny_trunk")
    tasks = [Classification("a", 3), Classification("b", 2)]
    return keras_mtl.MultiTaskModel(trunk, tasks, weighting=weighting)


def batch(num=8):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (num, 32, 32, 3)).astype("uint8")
    targets = {"a": rng.integers(0, 3, num).astype("int32"),
               "b": rng.integers(0, 2, num).astype("int32")}
    return images, targets


def values(variables):
    return [v.numpy().copy() for v in variables]


def moved(before, variables):
    return sum(float(np.sum(np.abs(b - v.numpy()))) for b, v in zip(before, variables))


def head(model, task):
    return model.get_layer(f"{task}_logits").trainable_variables


class EpochSnapshots(keras.callbacks.Callback):
    def __init__(self, variables):
        super().__init__()
        self.variables, self.snapshots = variables, []

    def on_train_begin(self, logs=None):
        self.snapshots.append(values(self.variables))

    def on_epoch_end(self, epoch, logs=None):
        self.snapshots.append(values(self.variables))


# --- per-part learning rates -----------------------------------------------------------------
def test_lower_trunk_learning_rate_moves_the_trunk_less():
    images, targets = batch()
    steps = []
    for trunk_optimizer in (None, keras.optimizers.SGD(LR * 0.01)):
        keras.utils.set_random_seed(0)
        model = tiny_model()
        model.compile(optimizer=keras.optimizers.SGD(LR), trunk_optimizer=trunk_optimizer)
        trunk_vars, head_vars = model.trunk.trainable_variables, head(model, "a") + head(model, "b")
        before = values(trunk_vars), values(head_vars)
        model.fit(images, targets, batch_size=8, epochs=1, verbose=0)
        steps.append(([v.numpy() - b for v, b in zip(trunk_vars, before[0])],
                      [v.numpy() - b for v, b in zip(head_vars, before[1])]))
    (trunk_plain, heads_plain), (trunk_slow, heads_slow) = steps
    # One SGD step: the trunk's update is exactly 1/100 of the plain one, the heads' the same.
    for slow, plain in zip(trunk_slow, trunk_plain):
        np.testing.assert_allclose(slow, 0.01 * plain, rtol=1e-3, atol=1e-7)  # float32 rounding
    for slow, plain in zip(heads_slow, heads_plain):
        np.testing.assert_allclose(slow, plain, rtol=1e-4, atol=1e-7)
    assert sum(np.abs(t).sum() for t in trunk_slow) > 0


def test_trunk_learning_rate_helper_scales_rates_and_schedules():
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-2, 10, 0.5)
    trunk = training.trunk_learning_rate(keras.optimizers.AdamW(schedule), 0.1)
    assert isinstance(trunk, keras.optimizers.AdamW)
    assert float(trunk._learning_rate(10)) == pytest.approx(0.1 * float(schedule(10)))
    restored = keras.optimizers.AdamW.from_config(trunk.get_config())
    assert float(restored._learning_rate(10)) == pytest.approx(0.1 * float(schedule(10)))
    assert float(training.trunk_learning_rate(
        keras.optimizers.SGD(0.5), 0.2).learning_rate) == pytest.approx(0.1)


@pytest.mark.parametrize("trunk_optimizer", [pytest.param(False, marks=pytest.mark.slow), True])
def test_frozen_trunk_is_thawed_after_n_epochs(trunk_optimizer):
    images, targets = batch()
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.AdamW(1e-2, weight_decay=0.1),
                  trunk_optimizer=keras.optimizers.AdamW(1e-3) if trunk_optimizer else None,
                  freeze_trunk_epochs=1)
    trunk = EpochSnapshots(model.trunk.trainable_variables)
    heads = EpochSnapshots(head(model, "a"))
    model.fit(images, targets, batch_size=4, epochs=2, verbose=0, callbacks=[trunk, heads])
    start, after_0, after_1 = trunk.snapshots
    for a, b in zip(start, after_0):
        np.testing.assert_array_equal(a, b)  # frozen in epoch 0 despite weight decay
    assert sum(np.abs(a - b).sum() for a, b in zip(after_0, after_1)) > 0  # thawed in epoch 1
    assert all(np.abs(a - b).sum() > 0 for a, b in zip(heads.snapshots[0], heads.snapshots[1]))


@pytest.mark.slow
def test_freezing_under_jit_compile():
    images, targets = batch()
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.SGD(LR), freeze_trunk_epochs=1, jit_compile=True)
    trunk = EpochSnapshots(model.trunk.trainable_variables)
    model.fit(images, targets, batch_size=4, epochs=2, verbose=0, callbacks=[trunk])
    start, after_0, after_1 = trunk.snapshots
    assert moved(start, [tf.Variable(a) for a in after_0]) == 0
    assert moved(after_0, [tf.Variable(a) for a in after_1]) > 0


def test_trunk_optimizer_is_saved_and_restored(tmp_path):
    images, targets = batch()
    model = tiny_model("uncertainty")
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  trunk_optimizer=keras.optimizers.Adam(1e-3), freeze_trunk_epochs=1,
                  task_schedule={"b": (0, 3)}, clip_task_gradients={"a": 5.0})
    model.fit(images, targets, batch_size=4, epochs=2, verbose=0)
    # The main optimizer holds no slots for the trunk's variables.
    assert len(model.optimizer.variables) < len(model.trunk_optimizer.variables) + 2 * len(
        model.trainable_variables)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.trunk_optimizer, keras.optimizers.Adam)
    assert loaded.trunk_optimizer.learning_rate.numpy() == pytest.approx(1e-3)
    assert int(loaded.trunk_optimizer.iterations.numpy()) == 2  # epoch 1 only: 2 steps
    for a, b in ((model.optimizer, loaded.optimizer),
                 (model.trunk_optimizer, loaded.trunk_optimizer)):
        assert len(a.variables) == len(b.variables)
        for x, y in zip(a.variables, b.variables):
            np.testing.assert_array_equal(x.numpy(), y.numpy())
    controls = loaded.training_controls
    assert controls.freeze_trunk_epochs == 1
    assert controls.task_schedule == {"b": (0, 3)}
    assert controls.clip_task_gradients == {"a": 5.0}
    # Training goes on from the restored state (from epoch 2: the trunk is thawed).
    loaded.fit(images, targets, batch_size=4, initial_epoch=2, epochs=3, verbose=0)
    assert int(loaded.trunk_optimizer.iterations.numpy()) == 4


# --- curricula ---------------------------------------------------------------------------------
@pytest.mark.parametrize("weighting", ["uncertainty", pytest.param("mgda", marks=pytest.mark.slow)])
def test_disabled_task_head_does_not_change(weighting):
    images, targets = batch()
    model = tiny_model(weighting)
    model.compile(optimizer=keras.optimizers.AdamW(1e-2, weight_decay=0.1),
                  task_schedule={"b": (1, 2)})
    head_a, head_b = EpochSnapshots(head(model, "a")), EpochSnapshots(head(model, "b"))
    model.fit(images, targets, batch_size=4, epochs=3, verbose=0, callbacks=[head_a, head_b])
    start, after_0, after_1, after_2 = head_b.snapshots
    for a, b in zip(start, after_0):
        np.testing.assert_array_equal(a, b)  # off in epoch 0 (despite weight decay)
    assert all(np.abs(a - b).sum() > 0 for a, b in zip(after_0, after_1))  # on in epoch 1
    for a, b in zip(after_1, after_2):
        np.testing.assert_array_equal(a, b)  # off again (despite Adam's momentum)
    assert all(np.abs(a - b).sum() > 0 for a, b in zip(head_a.snapshots[0], head_a.snapshots[1]))


def test_disabled_task_leaves_the_weighting_untouched_and_is_still_logged():
    images, targets = batch()
    model = tiny_model("uncertainty")
    model.compile(optimizer=keras.optimizers.SGD(LR), task_schedule={"b": 1})
    history = model.fit(images, targets, batch_size=4, epochs=1, verbose=0).history
    log_variance = model.weighting.log_variance.numpy()
    assert log_variance[1] == 0.0 and log_variance[0] != 0.0
    assert history["b_loss"][0] > 0  # computed and logged while off
    # Without the curriculum, the same run would train b's log-variance.
    assert model.training_controls.mask_at(0).tolist() == [1.0, 0.0]
    assert model.training_controls.mask_at(5).tolist() == [1.0, 1.0]


def test_invalid_controls_name_the_tasks():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"unknown task 'c'.*\['a', 'b'\]"):
        model.compile(optimizer="sgd", task_schedule={"c": 1})
    with pytest.raises(ValueError, match="unknown task 'c'"):
        model.compile(optimizer="sgd", clip_task_gradients={"c": 1.0})
    with pytest.raises(ValueError, match="start < end"):
        model.compile(optimizer="sgd", task_schedule={"a": (2, 1)})
    with pytest.raises(ValueError, match="> 0"):
        model.compile(optimizer="sgd", clip_task_gradients={"a": 0.0})


# --- per-task gradient clipping -----------------------------------------------------------------
def test_task_head_variables_follow_the_graph():
    model = tiny_model()
    heads = training_controls.task_head_variables(model)
    assert [[v.path for v in h] for h in heads] == [
        [v.path for v in head(model, "a")], [v.path for v in head(model, "b")]]


def test_clipped_step_matches_hand_computation():
    images, targets = batch()
    clip = 0.05
    model = tiny_model("equal")
    model.compile(optimizer=keras.optimizers.SGD(LR), clip_task_gradients={"a": clip})
    trunk_vars = list(model.trunk.trainable_variables)
    head_vars = head(model, "a") + head(model, "b")
    variables = trunk_vars + head_vars
    before = values(variables)

    # By hand: task a's gradient w.r.t. (shared features, head a), its norm, the scale.
    per_task = []
    for index, name in enumerate("ab"):
        with tf.GradientTape() as tape:
            losses, _ = model.task_losses({name: targets[name]}, model(images, training=True), {})
            loss = losses[index]  # indexed inside the tape
        grads = tape.gradient(loss, variables)
        per_task.append([np.zeros(v.shape) if g is None else g.numpy()
                         for g, v in zip(grads, variables)])
    with tf.GradientTape() as tape:
        features = keras.tree.flatten(model.trunk(images, training=True))
        leaves = [tf.stop_gradient(f) for f in features]
        tape.watch(leaves)
        outputs = model.feature_split.heads_model(leaves)
        losses, _ = model.task_losses({"a": targets["a"]}, outputs, {})
        loss_a = losses[0]
    feature_grads = tape.gradient(loss_a, leaves + head(model, "a"))
    norm = np.sqrt(sum(float(np.sum(g.numpy() ** 2)) for g in feature_grads if g is not None))
    factor = min(1.0, clip / norm)
    assert factor < 0.5  # the clip is active
    expected = [factor * a + b for a, b in zip(*per_task)]

    model.fit(images, targets, batch_size=8, epochs=1, verbose=0)
    for b, v, e in zip(before, variables, expected):
        np.testing.assert_allclose((b - v.numpy()) / LR, e, rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize("weighting", ["pcgrad", pytest.param("mgda", marks=pytest.mark.slow)])
def test_clipping_bounds_the_head_update_with_gradient_weightings(weighting):
    images, targets = batch()
    clip = 1e-3
    model = tiny_model(weighting)
    model.compile(optimizer=keras.optimizers.SGD(LR), clip_task_gradients=clip)
    before = values(head(model, "a"))
    model.fit(images, targets, batch_size=8, epochs=1, verbose=0)
    step = np.sqrt(sum(np.sum((b - v.numpy()) ** 2) for b, v in zip(before, head(model, "a"))))
    assert 0 < step <= LR * clip * (1 + 1e-4)


@pytest.mark.slow
def test_freezing_and_curriculum_under_mirrored_strategy():
    """Two logical CPUs, MirroredStrategy: the conds and held heads run per replica."""
    script = textwrap.dedent("""
        import sys
        sys.path.insert(0, %r)
        import tensorflow as tf
        tf.config.set_logical_device_configuration(
            tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras, numpy as np
        from test_controls import EpochSnapshots, batch, head, tiny_model
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        images, targets = batch(16)
        for trunk_optimizer in (None, "adamw"):
            with strategy.scope():
                model = tiny_model("uncertainty")
                model.compile(optimizer=keras.optimizers.AdamW(1e-2, weight_decay=0.1),
                              trunk_optimizer=trunk_optimizer, freeze_trunk_epochs=1,
                              task_schedule={"b": (1, None)})
            trunk = EpochSnapshots(model.trunk.trainable_variables)
            head_b = EpochSnapshots(head(model, "b"))
            data = tf.data.Dataset.from_tensor_slices((images, targets)).batch(8)
            model.fit(data, epochs=2, verbose=0, callbacks=[trunk, head_b])
            for snapshots in (trunk.snapshots, head_b.snapshots):
                assert all((a == b).all() for a, b in zip(snapshots[0], snapshots[1]))
                assert sum(abs(a - b).sum() for a, b in zip(snapshots[1], snapshots[2])) > 0
        print("OK")
    """ % os.path.dirname(__file__))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.stdout.strip().endswith("OK"), result.stderr[-3000:]
