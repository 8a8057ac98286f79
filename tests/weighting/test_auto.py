"""`"auto"`: calibrated gradient balancing at the shared features; fit, save and load; models
saved when it was FairGrad still load."""

import keras
import numpy as np
from keras import ops

from keras_mtl import weighting as weighting_lib
from keras_mtl.tasks import Classification


def test_auto_is_calibrated_balancing_at_the_shared_features(helpers):
    auto = weighting_lib.get("auto")
    assert isinstance(auto, weighting_lib.CalibratedGradientBalancing)
    assert (auto.rep_grad, auto.calibration_steps) == (True, 100)
    # Gradient norms 5 and 1, mean 3: w = 3 / (5, 1) = (0.6, 3), so both tasks enter with norm 3.
    auto = helpers.make("auto")
    direction, weights = helpers.step(auto, [[3.0, 4.0], [0.0, 1.0]])
    np.testing.assert_allclose(weights, [0.6, 3.0], rtol=1e-6)
    np.testing.assert_allclose(direction, [1.8, 5.4], rtol=1e-6)


def test_settings_can_be_changed_and_survive_a_config_round_trip():
    auto = weighting_lib.get("auto", calibration_steps=10, rep_grad=False)
    restored = weighting_lib.get({"class_name": "auto", "config": auto.get_config()})
    assert type(restored) is weighting_lib.AutoWeighting
    assert (restored.rep_grad, restored.calibration_steps) == (False, 10)


def test_fit_with_auto_saves_and_loads_its_calibration(tmp_path, conv_trunk, helpers):
    model, loss = helpers.fit_two_classifiers(conv_trunk(), "auto")
    assert np.isfinite(loss)
    counts = ops.convert_to_numpy(model.weighting.norm_count)
    np.testing.assert_array_equal(counts, [2.0, 2.0])  # one epoch of 2 steps, both tasks
    path = str(tmp_path / "auto.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored.weighting) is weighting_lib.AutoWeighting
    np.testing.assert_array_equal(ops.convert_to_numpy(restored.weighting.norm_sum),
                                  ops.convert_to_numpy(model.weighting.norm_sum))


def test_a_config_saved_when_auto_was_fairgrad_loads_as_fairgrad(helpers):
    # From 2026-11-28 to 29 "auto" was FairGrad at the features; its saved config had alpha.
    earlier = weighting_lib.get("fairgrad", rep_grad=True)
    serialized = keras.saving.serialize_keras_object(earlier)
    serialized["registered_name"] = "keras_mtl>AutoWeighting"
    serialized["class_name"] = "AutoWeighting"
    loaded = keras.saving.deserialize_keras_object(serialized)
    assert type(loaded) is weighting_lib.FairGrad
    assert (loaded.alpha, loaded.rep_grad) == (1.0, True)
    loaded.set_tasks([Classification("a", 2), Classification("b", 2)])
    # Orthogonal gradients (1, 0) and (0, 2): G w = 1 / w gives w = (1, 1/2).
    _, weights = helpers.step(loaded, [[1.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(weights, [1.0, 0.5], rtol=1e-4)
