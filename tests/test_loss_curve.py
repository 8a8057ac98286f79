"""TaskLossCurve: each task's mean training loss over windows of steps."""

import types

import keras
import numpy as np
import pytest

import keras_mtl
from keras_mtl.callbacks import TaskLossCurve
from keras_mtl.tasks import Classification


class _FakeModel:
    """What the callback reads: task names, loss trackers, the optimizer's step count."""

    def __init__(self, names):
        self.task_names = names
        self.task_loss_trackers = [keras.metrics.Mean(name=f"{n}_loss") for n in names]
        self.optimizer = types.SimpleNamespace(iterations=keras.Variable(0, dtype="int64"))

    def step(self, losses):
        """One training step: `losses` maps the labelled tasks to their loss."""
        for name, tracker in zip(self.task_names, self.task_loss_trackers):
            if name in losses:
                tracker.update_state(losses[name])
        self.optimizer.iterations.assign_add(1)


def _run(curve, model, epochs):
    curve.set_model(model)
    curve.on_train_begin()
    for epoch, steps in enumerate(epochs):
        for tracker in model.task_loss_trackers:
            tracker.reset_state()  # as fit does at every epoch
        curve.on_epoch_begin(epoch)
        for batch, losses in enumerate(steps):
            model.step(losses)
            curve.on_train_batch_end(batch)


def test_windows_average_the_labelled_steps_only():
    # Worked by hand: 4 steps, points at steps 2 and 4.
    # a: 1, 2 | 3, 4  -> 1.5 and 3.5;  b labelled at steps 1 and 4 only: 10 | 20;
    # c labelled at step 2 only: 6 in the first window, absent from the second.
    model = _FakeModel(["a", "b", "c"])
    curve = TaskLossCurve(total_steps=4, points=2)
    _run(curve, model, [[{"a": 1.0, "b": 10.0}, {"a": 2.0, "c": 6.0},
                         {"a": 3.0}, {"a": 4.0, "b": 20.0}]])
    assert [step for step, _ in curve.curve] == [2, 4]
    first, second = curve.curve[0][1], curve.curve[1][1]
    assert first == pytest.approx({"a": 1.5, "b": 10.0, "c": 6.0})
    assert second == pytest.approx({"a": 3.5, "b": 20.0})


def test_a_new_epoch_starts_the_window_from_the_reset_trackers():
    # 2 epochs of 2 steps, a point every 2 steps (2 and 4): each window is one epoch.
    model = _FakeModel(["a"])
    curve = TaskLossCurve(total_steps=4, points=2)
    _run(curve, model, [[{"a": 5.0}, {"a": 7.0}], [{"a": 1.0}, {"a": 2.0}]])
    assert [losses["a"] for _, losses in curve.curve] == pytest.approx([6.0, 1.5])


def test_bad_arguments_name_the_callback():
    with pytest.raises(ValueError, match="TaskLossCurve needs total_steps >= 1"):
        TaskLossCurve(total_steps=0)


def test_curve_of_a_fit_with_a_frozen_model_is_flat_at_the_models_loss(conv_trunk):
    # With a zero learning rate and one repeated batch every step has the same loss, so
    # every window's mean is that loss: what the model's own loss tracker reports.
    model = keras_mtl.build_mtl([Classification("a", 3), Classification("b", 2)],
                                trunk=conv_trunk(), weights=None, input_shape=(32, 32, 3))
    rng = np.random.default_rng(0)
    images = np.repeat(rng.integers(0, 255, (1, 32, 32, 3)), 4, axis=0).astype("uint8")
    targets = {"a": np.array([0, 0, 0, 0], "int32"), "b": np.array([1, 1, 1, 1], "int32")}
    model.compile(optimizer=keras.optimizers.SGD(0.0), jit_compile=False)
    curve = TaskLossCurve(total_steps=4, points=4)
    history = model.fit(images, targets, batch_size=1, epochs=1, verbose=0, callbacks=[curve])
    assert [step for step, _ in curve.curve] == [1, 2, 3, 4]
    for name in ("a", "b"):
        values = [losses[name] for _, losses in curve.curve]
        np.testing.assert_allclose(values, history.history[f"{name}_loss"][0], rtol=1e-5)
