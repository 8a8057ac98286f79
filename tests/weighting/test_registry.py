"""Every registered weighting: `get` by name, config, class and instance; errors."""

import inspect
import math

import keras
import numpy as np
import pytest

from keras_mtl import weighting as weighting_lib
from keras_mtl.tasks import Classification

TASKS = ["a", "b"]
# Constructor arguments a weighting cannot do without.
REQUIRED = {"static": {"weights": {"a": 1.0, "b": 0.5}}}


def make(name):
    return weighting_lib.get(name, **REQUIRED.get(name, {}))


def tasks():
    return [Classification(name, 2) for name in TASKS]


@pytest.mark.parametrize("name", weighting_lib.names())
def test_get_and_config_round_trip(name):
    # By name, class and instance.
    weighting = make(name)
    cls = weighting_lib.WEIGHTINGS.lookup(name)
    assert isinstance(weighting, weighting_lib.Weighting)
    assert isinstance(weighting, cls)
    assert weighting_lib.get(weighting) is weighting
    assert isinstance(weighting_lib.get(cls, **REQUIRED.get(name, {})), cls)
    assert weighting.gradient_based == isinstance(weighting, weighting_lib.GradientWeighting)

    # Every constructor argument is in the config, and the config rebuilds it.
    config = weighting.get_config()
    params = inspect.signature(type(weighting).__init__).parameters
    hyperparameters = [p for p in params if p not in ("self", "kwargs")]
    assert set(hyperparameters) <= set(config), set(hyperparameters) - set(config)
    for identifier in (
        {"class_name": type(weighting).__name__, "config": config},
        {"class_name": name, "config": config},
    ):
        restored = weighting_lib.get(identifier)
        assert type(restored) is type(weighting)
        assert restored.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(weighting))
    assert type(restored) is type(weighting)
    assert restored.get_config() == config

    # Both build for the tasks and log finite weights.
    for instance in (weighting, restored):
        instance.set_tasks(tasks())
        weights = keras.ops.convert_to_numpy(instance.current_weights())
        assert weights.shape == (len(TASKS),)
        assert np.all(np.isfinite(weights))
    if not weighting.gradient_based:
        total = restored(np.array([1.0, 2.0], "float32"), np.ones(2, "float32"), training=False)
        assert math.isfinite(float(total))


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(ValueError, match="Unknown weighting 'nope'") as error:
        weighting_lib.get("nope")
    for name in weighting_lib.names():
        assert name in str(error.value)
    with pytest.raises(ValueError, match="Valid names"):
        weighting_lib.get({"class_name": "Nope", "config": {}})
    with pytest.raises(TypeError):
        weighting_lib.get(3)


def test_static_dict_is_validated():
    weighting = weighting_lib.get({"a": 1.0, "b": 0.5})
    assert isinstance(weighting, weighting_lib.StaticWeighting)
    weighting.set_tasks(tasks())
    assert float(weighting(np.array([1.0, 2.0], "float32"), np.ones(2, "float32"))) == 2.0

    with pytest.raises(ValueError, match=r"unknown \['c'\], missing \['b'\]"):
        weighting_lib.get({"a": 1.0, "c": 1.0}).set_tasks(tasks())
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        weighting_lib.get({"a": 1.0}).set_tasks(tasks())
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite and >= 0"):
            weighting_lib.get({"a": 1.0, "b": bad})
