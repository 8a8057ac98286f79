"""Calibrated gradient balancing: hand-worked steps, the window, absent tasks, save and load."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_mtl
from keras_mtl import weighting as weighting_lib
from keras_mtl.tasks import Classification


def make(calibration_steps, num_tasks=2):
    weighting = weighting_lib.get("calibrated", calibration_steps=calibration_steps)
    weighting.set_tasks([Classification(f"t{i}", 2) for i in range(num_tasks)])
    return weighting


def test_hand_worked_window_then_frozen_weights(helpers):
    weighting = make(calibration_steps=2)
    # Step 1: norms (5, 1), mean 3: w = (0.6, 3).
    direction, weights = helpers.step(weighting, [[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(weights, [0.6, 3.0], rtol=1e-6)
    np.testing.assert_allclose(direction, [1.8, 2.4, 3.0], rtol=1e-6)
    # Step 2: norms (10, 1); running means (7.5, 1), mean 4.25: w = (4.25 / 7.5, 4.25).
    _, weights = helpers.step(weighting, [[6.0, 8.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(weights, [4.25 / 7.5, 4.25], rtol=1e-6)
    # Step 3: the window is over; the weights stay whatever the gradients are now.
    direction, weights = helpers.step(weighting, [[0.0, 1.0, 0.0], [0.0, 0.0, 100.0]])
    np.testing.assert_allclose(weights, [4.25 / 7.5, 4.25], rtol=1e-6)
    np.testing.assert_allclose(direction, [0.0, 4.25 / 7.5, 425.0], rtol=1e-6)


def test_a_learnt_task_fades_instead_of_being_amplified(helpers):
    # Task 0's gradient shrinks 10x after calibration: its share of the update shrinks
    # 10x too (a per-step normalisation would scale it back up to task 1's size).
    weighting = make(calibration_steps=1)
    helpers.step(weighting, [[2.0, 0.0], [0.0, 1.0]])
    direction, _ = helpers.step(weighting, [[0.2, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(direction[0] / direction[1], 0.1 * 1.0, rtol=1e-6)


def test_whole_run_calibration_keeps_averaging(helpers):
    weighting = make(calibration_steps=None)
    helpers.step(weighting, [[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]])  # norms (5, 1)
    helpers.step(weighting, [[6.0, 8.0, 0.0], [0.0, 0.0, 1.0]])  # norms (10, 1)
    # Step 3: norms (1, 7); running means (16 / 3, 3), mean 25 / 6, where a window of 2
    # would have held (7.5, 1).
    direction, weights = helpers.step(weighting, [[0.0, 1.0, 0.0], [0.0, 0.0, 7.0]])
    np.testing.assert_allclose(weights, [(25 / 6) / (16 / 3), (25 / 6) / 3], rtol=1e-6)
    np.testing.assert_allclose(direction, [0.0, 25 / 32, 175 / 18], rtol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(weighting.norm_count), [3.0, 3.0])
    # Task 1's gradient grew (1 -> 7): its weight fell from 3 to 25/18. Task 0's shrank
    # (10 -> 1): its weight rose from 0.6 to 25/32, far below the 4 of a per-step
    # normalisation (mean(1, 7) / 1), because its past holds its mean up.
    assert weights[0] < 4.0 and weights[1] < 3.0
    assert weighting.get_config()["calibration_steps"] is None


def test_absent_task_keeps_its_calibration_and_gets_weight_zero(helpers):
    weighting = make(calibration_steps=3, num_tasks=3)
    direction, weights = helpers.step(weighting, [[3.0, 0.0], [9.0, 9.0], [0.0, 1.0]], present=[1, 0, 1])
    assert weights[1] == 0.0
    np.testing.assert_allclose(ops.convert_to_numpy(weighting.norm_count), [1.0, 0.0, 1.0])
    np.testing.assert_allclose(weights[[0, 2]], [2.0 / 3.0, 2.0], rtol=1e-6)  # norms 3, 1
    np.testing.assert_allclose(direction, [2.0, 2.0], rtol=1e-6)
    # A zero gradient of a present task is not measured (it would drive its mean to 0).
    helpers.step(weighting, [[3.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    assert ops.convert_to_numpy(weighting.norm_count)[1] == 0.0


def test_bad_window_and_defaults():
    with pytest.raises(ValueError, match="calibration_steps must be >= 1 or None"):
        weighting_lib.get("calibrated", calibration_steps=0)
    calibrated = weighting_lib.get("calibrated")
    assert calibrated.rep_grad and calibrated.calibration_steps == 100


def test_fit_calibrates_saves_and_restores(tmp_path, conv_trunk):
    model = keras_mtl.build_mtl([Classification("a", 3), Classification("b", 2)],
                                trunk=conv_trunk(), weights=None, input_shape=(32, 32, 3),
                                weighting="calibrated")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (8, 32, 32, 3)).astype("uint8")
    targets = {"a": rng.integers(0, 3, 8).astype("int32"), "b": rng.integers(0, 2, 8).astype("int32")}
    # SGD: Adam's slot updates double the XLA compile time and are not what is tested.
    model.compile(optimizer=keras.optimizers.SGD(1e-3), jit_compile=True)
    history = model.fit(images, targets, batch_size=4, epochs=2, verbose=0).history
    counts = ops.convert_to_numpy(model.weighting.norm_count)
    np.testing.assert_array_equal(counts, [4.0, 4.0])  # 2 epochs of 2 steps, both tasks
    assert np.isfinite(history["weight/a"][-1]) and np.isfinite(history["weight/b"][-1])
    # Every task enters with the mean calibrated norm: w_t n_t is the same for both.
    weights = ops.convert_to_numpy(model.weighting.current_weights())
    mean_norms = ops.convert_to_numpy(model.weighting.norm_sum) / counts
    np.testing.assert_allclose(weights * mean_norms, [mean_norms.mean()] * 2, rtol=1e-5)
    path = str(tmp_path / "calibrated.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored.weighting).__name__ == "CalibratedGradientBalancing"
    np.testing.assert_array_equal(ops.convert_to_numpy(restored.weighting.norm_sum),
                                  ops.convert_to_numpy(model.weighting.norm_sum))
