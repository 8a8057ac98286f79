"""KerasHub backbones as trunks: built from config (no download) or from a preset folder."""

import sys

import keras
import numpy as np
import pytest

import keras_mtl
from keras_mtl import trunks
from keras_mtl.trunks import keras_hub_presets

keras_hub = pytest.importorskip("keras_hub")

SIZE = 32
IMAGENET_SCALE = [1 / (255 * 0.229), 1 / (255 * 0.224), 1 / (255 * 0.225)]
IMAGENET_OFFSET = [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225]


def tiny_resnet(image_shape=(None, None, 3)):
    # KerasHub requires 64 filters in the first stage.
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 64, 64, 64],
        stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2],
        block_type="basic_block", image_shape=image_shape)


def tiny_vit(size=SIZE, patch_size=16):
    return keras_hub.models.ViTBackbone(image_shape=(size, size, 3), patch_size=patch_size,
                                        num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32)


def pixels(count=4, size=SIZE):
    return np.random.default_rng(0).integers(0, 256, (count, size, size, 3)).astype("uint8")


def assert_pyramid(trunk, size=SIZE, channels=None):
    features = trunk(pixels(2, size))
    assert sorted(features) == ["P2", "P3", "P4", "P5"]
    for level, stride in trunks.STRIDES.items():
        assert tuple(features[level].shape[:3]) == (2, size // stride, size // stride)
        if channels:
            assert features[level].shape[-1] == channels[level]
    return features


def train_save_and_load(model, tmp_path):
    images = pixels(4)
    targets = {"kind": np.array([0, 1, 2, 0]), "mask": (images[..., 0] > 127).astype("int32")}
    before = [v.numpy().copy() for v in model.trunk.trainable_variables]
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.fit(images, targets, batch_size=2, epochs=1, verbose=0)  # 2 steps
    assert any(not np.array_equal(old, v.numpy())
               for old, v in zip(before, model.trunk.trainable_variables))
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    expected, got = model.predict(images, verbose=0), loaded.predict(images, verbose=0)
    assert sorted(got) == sorted(expected)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-6)


def shapes_tasks():
    return [keras_mtl.tasks.Classification("kind", 3), keras_mtl.tasks.Segmentation("mask", 2)]


def test_resnet_backbone_is_a_trunk_that_trains_saves_and_loads(tmp_path):
    backbone = tiny_resnet()
    model = keras_mtl.build_mtl(shapes_tasks(), trunk=backbone, input_shape=(SIZE, SIZE, 3),
                                weighting="equal")
    # The backbone's own P2..P5 (same strides), with ImageNet mean/std inside the model.
    trunk_layers = [layer.name for layer in model.trunk.layers]
    assert trunk_layers == ["images", "preprocessing", f"{backbone.name}_features"]
    features = assert_pyramid(model.trunk, channels=dict.fromkeys(trunks.LEVELS, 64))
    images = pixels(2)
    reference = keras.Model(backbone.inputs, backbone.pyramid_outputs)(
        (images / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225])
    for level in trunks.LEVELS:
        np.testing.assert_allclose(features[level], reference[level], rtol=1e-4, atol=1e-4)
    train_save_and_load(model, tmp_path)


def test_vit_backbone_gets_a_simple_pyramid_and_trains_saves_loads(tmp_path):
    backbone = tiny_vit()  # 2 x 2 patches of 16 px: one map at stride 16
    model = keras_mtl.build_mtl(shapes_tasks(), trunk=backbone, input_shape=(SIZE, SIZE, 3),
                                weighting="equal")
    # P4 is the patch grid; P3 and P2 are transposed convolutions (half the channels each
    # time), P5 is max pooling.
    features = assert_pyramid(model.trunk, channels={"P2": 4, "P3": 8, "P4": 16, "P5": 16})
    # The grid holds the patch tokens in row-major order, the class token dropped, after the
    # default preprocessing (ImageNet mean/std on 0..1 pixels).
    grid_model = keras.Model(model.trunk.input, model.trunk.get_layer("tokens_to_grid").output)
    images = pixels(2)
    normalised = (images / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    tokens = backbone(normalised.astype("float32")).numpy()  # (2, 1 + 4, 16), class token first
    np.testing.assert_allclose(grid_model(images), tokens[:, 1:].reshape(2, 2, 2, 16),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(features["P5"], np.max(features["P4"], axis=(1, 2), keepdims=True))
    train_save_and_load(model, tmp_path)


def test_pyramid_levels_are_mapped_by_stride_not_by_name():
    # MiT names its maps at strides 4..32 P1..P4, and its last one has no static channel count.
    backbone = keras_hub.models.MiTBackbone(
        layerwise_depths=[1, 1, 1, 1], num_layers=4, layerwise_num_heads=[1, 1, 1, 1],
        layerwise_sr_ratios=[4, 2, 1, 1], max_drop_path_rate=0.0,
        layerwise_patch_sizes=[7, 3, 3, 3], layerwise_strides=[4, 2, 2, 2],
        image_shape=(SIZE, SIZE, 3), hidden_dims=[8, 8, 16, 24])
    model = keras_mtl.build_mtl(shapes_tasks(), trunk=backbone, input_shape=(SIZE, SIZE, 3),
                                weighting="equal")  # the heads need static channels
    features = assert_pyramid(model.trunk, channels={"P2": 8, "P3": 8, "P4": 16, "P5": 24})
    images = pixels(2)
    reference = keras.Model(backbone.inputs, backbone.pyramid_outputs)(
        trunks.ImagePreprocessing("torch")(images))
    for ours, theirs in zip(trunks.LEVELS, ("P1", "P2", "P3", "P4")):
        np.testing.assert_allclose(features[ours], reference[theirs], rtol=1e-4, atol=1e-4)


def test_efficientnet_drops_stride_2_and_pools_the_missing_p5():
    backbone = keras_hub.models.EfficientNetBackbone(  # maps at strides 2, 4, 8, 16
        stackwise_kernel_sizes=[3, 3, 3, 3], stackwise_num_repeats=[1, 1, 1, 1],
        stackwise_input_filters=[8, 8, 16, 16], stackwise_output_filters=[8, 16, 16, 24],
        stackwise_expansion_ratios=[1, 2, 2, 2],
        stackwise_squeeze_and_excite_ratios=[0.0, 0.0, 0.25, 0.25],
        stackwise_strides=[1, 2, 2, 2], stackwise_block_types=["fused", "fused", "unfused",
                                                                "unfused"],
        stackwise_force_input_filters=[0] * 4, stackwise_nores_option=[False] * 4,
        stackwise_width_coefficients=[1.0] * 4, stackwise_depth_coefficients=[1.0] * 4,
        num_features=32)
    trunk = trunks.get(backbone, input_shape=(SIZE, SIZE, 3))
    features = assert_pyramid(trunk, channels={"P2": 16, "P3": 16, "P4": 32, "P5": 32})
    reference = keras.Model(backbone.inputs, backbone.pyramid_outputs)(
        trunks.ImagePreprocessing("torch")(pixels(2)))
    np.testing.assert_allclose(features["P2"], reference["P2"], rtol=1e-4, atol=1e-4)
    pooled = np.asarray(reference["P4"]).reshape(2, 1, 2, 1, 2, 32).max(axis=(2, 4))
    np.testing.assert_allclose(features["P5"], pooled, rtol=1e-4, atol=1e-4)


def test_dinov2_patch_14_is_resized_to_stride_16():
    backbone = keras_hub.models.DINOV2Backbone(
        patch_size=14, num_layers=1, hidden_dim=16, num_heads=2, intermediate_dim=32,
        image_shape=(224, 224, 3), position_embedding_shape=(224, 224, 3))
    trunk = trunks.get(backbone, input_shape=(224, 224, 3))
    assert trunk.get_layer("tokens_to_grid").output.shape == (None, 16, 16, 16)  # stride 14
    assert trunk.get_layer("resize_last").output.shape == (None, 14, 14, 16)  # stride 16
    assert_pyramid(trunk, size=224, channels={"P2": 4, "P3": 8, "P4": 16, "P5": 16})


def save_preset(folder, converter=True):
    backbone = tiny_resnet()
    backbone.save_to_preset(str(folder))
    if converter:
        keras_hub.layers.ResNetImageConverter(
            image_size=(224, 224), scale=[0.5, 0.25, 0.125], offset=[-1.0, 0.0, 1.0],
        ).save_to_preset(str(folder))
    return backbone


def test_preset_folder_loads_weights_and_image_converter(tmp_path):
    source = save_preset(tmp_path / "preset")
    trunk = trunks.get(f"keras_hub:{tmp_path / 'preset'}", input_shape=(SIZE, SIZE, 3),
                       weights="imagenet")
    saved = {v.path: v.numpy() for v in source.weights}
    loaded = [v for v in trunk.weights if v.path in saved]
    assert len(loaded) == len(saved)
    for variable in loaded:
        np.testing.assert_array_equal(variable.numpy(), saved[variable.path])
    # The converter's scale and offset run inside the trunk.
    images = pixels(2)
    reference = keras.Model(source.inputs, source.pyramid_outputs)(
        images * np.array([0.5, 0.25, 0.125]) + np.array([-1.0, 0.0, 1.0]))
    features = assert_pyramid(trunk)
    for level in trunks.LEVELS:
        np.testing.assert_allclose(features[level], reference[level], rtol=1e-4, atol=1e-4)

    random = trunks.get(f"keras_hub:{tmp_path / 'preset'}", input_shape=(SIZE, SIZE, 3),
                        weights=None)
    kernel = next(v for v in random.weights if v.path.endswith("conv1_conv/kernel"))
    assert not np.array_equal(kernel.numpy(), saved[kernel.path])


def test_preset_without_converter_warns_and_uses_imagenet_statistics(tmp_path):
    save_preset(tmp_path / "bare", converter=False)
    with pytest.warns(UserWarning, match="has no image_converter.json.*preprocessing='torch'"):
        trunk = trunks.from_keras_hub(str(tmp_path / "bare"), input_shape=(SIZE, SIZE, 3))
    assert trunk.get_layer("preprocessing").mode == "torch"


def test_preprocessing_from_an_image_converter():
    converter = keras_hub.layers.ImageConverter(scale=IMAGENET_SCALE, offset=IMAGENET_OFFSET)
    layer = keras_hub_presets.preprocessing_layer(converter)
    images = pixels(2, 4)
    np.testing.assert_allclose(layer(images), converter(images), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer(images), trunks.ImagePreprocessing("torch")(images),
                               rtol=1e-5, atol=1e-5)


def test_string_trunk_reaches_keras_hub_through_build_mtl(tmp_path):
    save_preset(tmp_path / "preset")
    model = keras_mtl.build_mtl(shapes_tasks(), trunk=f"keras_hub:{tmp_path / 'preset'}",
                                input_shape=(SIZE, SIZE, 3), weights=None, weighting="equal")
    assert model.trunk.name == "trunk_res_net_backbone"
    assert isinstance(model.trunk.get_layer("preprocessing"), keras.layers.Rescaling)


def test_offline_preset_error_says_how_to_load_from_a_folder(monkeypatch):
    def no_network(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'www.kaggle.com'")

    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", no_network)
    with pytest.raises(RuntimeError) as error:
        trunks.get("keras_hub:resnet_18_imagenet", input_shape=(SIZE, SIZE, 3))
    message = str(error.value)
    assert "Could not download the KerasHub preset 'resnet_18_imagenet'" in message
    assert "from_preset('resnet_18_imagenet').save_to_preset('DIR')" in message
    assert "trunk='keras_hub:/path/to/DIR'" in message


@pytest.mark.parametrize("preset, weights, match", [
    ("./no/such/preset", "imagenet", "KerasHub preset folder './no/such/preset' does not exist"),
    ("resnet_18_imagenet", "/some/file.h5", "weights must be 'imagenet'"),
])
def test_bad_presets_and_weights_are_clear_errors(preset, weights, match):
    with pytest.raises(ValueError, match=match):
        trunks.get(f"keras_hub:{preset}", input_shape=(SIZE, SIZE, 3), weights=weights)


def test_without_keras_hub_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # `import keras_hub` now fails
    with pytest.raises(ImportError, match=r"pip install 'keras_mtl\[hub\]'"):
        trunks.get("keras_hub:resnet_18_imagenet", input_shape=(SIZE, SIZE, 3))


def test_fixed_size_backbone_refuses_another_input_shape():
    with pytest.raises(ValueError, match=r"takes images of shape \(32, 32, 3\).*input_shape="
                                         r"\(64, 64, 3\)"):
        trunks.get(tiny_vit(), input_shape=(64, 64, 3))


@pytest.mark.slow
def test_dinov2_trains_the_shapes_tasks_and_exports(tmp_path):
    from keras_mtl.data import shapes
    from keras_mtl.export import check_export

    backbone = keras_hub.models.DINOV2Backbone(
        patch_size=14, num_layers=1, hidden_dim=32, num_heads=2, intermediate_dim=64,
        image_shape=(64, 64, 3), position_embedding_shape=(56, 56, 3))
    tasks = shapes.make_tasks(with_detection=True)
    data = shapes.make_dataset(8, image_size=64, batch_size=4, tasks=[t.name for t in tasks])
    model = keras_mtl.build_mtl(tasks, trunk=backbone, input_shape=(64, 64, 3))
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    history = model.fit(data, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    images = next(iter(data))[0].numpy()
    model.export(str(tmp_path / "export"), verbose=False)
    differences = check_export(model, str(tmp_path / "export"), images)
    assert {"label", "mask", "objects_boxes"} <= set(differences)
