"""`"auto"`: FairGrad with fixed settings; models saved with the earlier `"auto"` still load."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_mtl import weighting as weighting_lib
from keras_mtl.tasks import Classification


def test_auto_is_proportionally_fair_at_the_shared_features(helpers):
    auto = weighting_lib.get("auto")
    assert isinstance(auto, weighting_lib.FairGrad)
    assert (auto.alpha, auto.rep_grad) == (1.0, True)
    # Orthogonal gradients (1, 0) and (0, 2): G = diag(1, 4), G w = 1 / w gives w = (1, 1/2),
    # so each task's decrease g_t . d is 1 / w_t = (1, 2) and d = (1, 1).
    auto = helpers.make("auto")
    direction, weights = helpers.step(auto, [[1.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(weights, [1.0, 0.5], rtol=1e-4)
    np.testing.assert_allclose(direction, [1.0, 1.0], rtol=1e-4)
    restored = weighting_lib.get({"class_name": "auto", "config": auto.get_config()})
    assert type(restored) is weighting_lib.AutoWeighting


def test_other_settings_are_refused_with_the_name_to_use():
    with pytest.raises(ValueError, match=r'"auto" has fixed settings.*"fairgrad"'):
        weighting_lib.get("auto", rep_grad=False)
    with pytest.raises(ValueError, match=r"alpha=2"):
        weighting_lib.get("auto", alpha=2)


def test_a_config_saved_by_the_earlier_auto_loads_as_calibrated_balancing(helpers):
    # Until 2026-11-28 "auto" was calibrated balancing; its saved config had calibration_steps.
    earlier = weighting_lib.get("calibrated")
    serialized = keras.saving.serialize_keras_object(earlier)
    serialized["registered_name"] = "keras_mtl>AutoWeighting"
    serialized["class_name"] = "AutoWeighting"
    loaded = keras.saving.deserialize_keras_object(serialized)
    assert type(loaded) is weighting_lib.CalibratedGradientBalancing
    assert (loaded.rep_grad, loaded.calibration_steps) == (True, 100)
    loaded.set_tasks([Classification("a", 2), Classification("b", 2)])
    _, weights = helpers.step(loaded, [[3.0, 4.0], [0.0, 1.0]])  # norms 5 and 1, mean 3
    np.testing.assert_allclose(ops.convert_to_numpy(weights), [0.6, 3.0], rtol=1e-6)
