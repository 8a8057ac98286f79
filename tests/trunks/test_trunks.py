import os

import keras
import numpy as np
import pytest

import keras_mtl
from keras_mtl import trunks
from keras_mtl.trunks.applications import application_names

TINY = (32, 32, 3)


@pytest.mark.parametrize("name", trunks.names())
def test_every_trunk_builds_with_pyramid(name):
    trunk = trunks.get(name, input_shape=TINY, weights=None)
    features = trunk(np.zeros((2, *TINY), "uint8"))
    assert sorted(features) == ["P2", "P3", "P4", "P5"]
    for level, stride in trunks.STRIDES.items():
        assert tuple(features[level].shape[:3]) == (2, 32 // stride, 32 // stride)


# One ResNet and one VGG in the default run (the loading code is shared); the rest are slow.
_DEFAULT_RUN_APPLICATIONS = ("resnet50", "vgg16")


@pytest.mark.parametrize("name", [
    name if name in _DEFAULT_RUN_APPLICATIONS else pytest.param(name, marks=pytest.mark.slow)
    for name in application_names()])
def test_application_trunk_loads_weights_file(name, tmp_path):
    constructor = {"resnet50": "ResNet50", "resnet101": "ResNet101", "resnet152": "ResNet152",
                   "resnet50v2": "ResNet50V2", "resnet101v2": "ResNet101V2",
                   "resnet152v2": "ResNet152V2", "vgg16": "VGG16", "vgg19": "VGG19"}[name]
    source = getattr(keras.applications, constructor)(include_top=False, weights=None,
                                                       input_shape=TINY)
    path = str(tmp_path / f"{name}.weights.h5")
    source.save_weights(path)
    trunk = trunks.get(name, input_shape=TINY, weights=path)
    loaded = {v.path: v.numpy() for v in trunk.weights}
    assert len(loaded) == len(source.weights)
    for variable in source.weights:
        np.testing.assert_array_equal(loaded[variable.path], variable.numpy())


def test_small_resnet_loads_its_own_weights_file(tmp_path):
    source = trunks.get("micro_resnet", input_shape=TINY)
    path = str(tmp_path / "micro.weights.h5")
    source.save_weights(path)
    trunk = trunks.get("micro_resnet", input_shape=TINY, weights=path)
    for a, b in zip(source.weights, trunk.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_missing_weights_file_is_a_clear_error():
    with pytest.raises(ValueError, match="'resnet50': weights file '/no/such.h5' does not exist"):
        trunks.get("resnet50", input_shape=TINY, weights="/no/such.h5")


def test_failed_imagenet_download_says_where_to_put_the_file(monkeypatch, tmp_path):
    from keras.src.utils import file_utils

    def no_network(*args, **kwargs):
        raise Exception("URL fetch failure on https://example/vgg16.h5: no route")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(file_utils, "get_file", no_network)
    with pytest.raises(RuntimeError) as error:
        trunks.get("vgg16", input_shape=TINY, weights="imagenet")
    message = str(error.value)
    assert os.path.join(str(tmp_path), "models", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5") in message
    assert "weights='/path/to/" in message


def test_small_trunks_refuse_imagenet():
    with pytest.raises(ValueError, match="'tiny_resnet' has no ImageNet weights"):
        trunks.get("tiny_resnet", input_shape=TINY, weights="imagenet")


def test_unknown_trunk_lists_names():
    with pytest.raises(ValueError, match="Unknown trunk 'resnet9000'. Valid names: .*resnet50"):
        trunks.get("resnet9000")


@pytest.mark.parametrize(
    "mode, reference",
    [
        ("caffe", keras.applications.resnet50.preprocess_input),
        ("tf", keras.applications.resnet_v2.preprocess_input),
        ("torch", lambda x: keras.applications.imagenet_utils.preprocess_input(x, mode="torch")),
    ],
)
def test_preprocessing_matches_keras_applications(mode, reference):
    pixels = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3)).astype("uint8")
    got = trunks.ImagePreprocessing(mode)(pixels)
    np.testing.assert_allclose(got, reference(pixels.astype("float32")), rtol=1e-5, atol=1e-4)


def test_user_model_is_wrapped_by_stride():
    inputs = keras.Input(TINY)
    x = inputs
    for index in range(5):
        x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name=f"down{index}")(x)
    user = keras.Model(inputs, x)
    trunk = trunks.get(user)
    features = trunk(np.zeros((1, *TINY)))
    assert features["P2"].shape == (1, 8, 8, 4) and features["P5"].shape == (1, 1, 1, 4)
    assert trunks.find_pyramid_layers(user) == {"P2": "down1", "P3": "down2", "P4": "down3",
                                                "P5": "down4"}


def test_user_model_without_strides_is_refused():
    inputs = keras.Input(TINY)
    user = keras.Model(inputs, keras.layers.Conv2D(4, 3, padding="same")(inputs))
    with pytest.raises(ValueError, match="no layer at the strides"):
        trunks.get(user)


def test_frozen_trunk_keeps_batchnorm_statistics():
    model = keras_mtl.build_mtl([keras_mtl.tasks.Classification("c", 2)], trunk="micro_resnet",
                                weights=None, input_shape=TINY, trainable_trunk=False)
    assert model.trunk.trainable_variables == []
    before = [v.numpy().copy() for v in model.trunk.weights]
    head_before = model.get_layer("c_logits").kernel.numpy().copy()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    images = np.random.default_rng(0).integers(0, 256, (8, *TINY)).astype("uint8")
    model.fit(images, {"c": np.arange(8) % 2}, epochs=2, batch_size=4, verbose=0)
    for old, variable in zip(before, model.trunk.weights):  # moving means/variances too
        np.testing.assert_array_equal(old, variable.numpy())
    assert not np.allclose(head_before, model.get_layer("c_logits").kernel.numpy())
