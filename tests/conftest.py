"""Shared test settings: quiet TensorFlow, fixed seeds, the shared data folder."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture(autouse=True)
def _seed_and_clear():
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("float32")
    yield
    keras.backend.clear_session()


@pytest.fixture
def conv_trunk():
    """`conv_trunk(input_shape=(32, 32, 3))`: four plain convolutions to the P2..P5 pyramid.

    For tests of a head or a weighting, not of the trunk: fit, XLA and export
    trace it in about half the time of `micro_resnet` on CPU.
    """
    def make(input_shape=(32, 32, 3)):
        images = keras.Input(input_shape)
        x = keras.layers.Conv2D(8, 4, strides=4, activation="relu")(images)  # (B, H/4, W/4, 8)
        levels = {"P2": x}
        for level in (3, 4, 5):
            x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
            levels[f"P{level}"] = x
        return keras.Model(images, levels)

    return make
