import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mtl import trunks
from keras_mtl.tasks import Segmentation


def test_loss_ignores_ignore_index_pixels():
    task = Segmentation("s", num_classes=3)
    labels = np.array([[[0, 255], [2, 255]]])  # (1, 2, 2)
    logits = np.zeros((1, 2, 2, 3))
    logits[0, 0, 1] = [100.0, -100.0, 0.0]  # ignored pixel: a huge loss if it counted
    loss, count = task.compute_loss(labels, logits)
    assert float(count) == 2.0
    assert float(loss) == pytest.approx(math.log(3.0), rel=1e-5)


def test_dice_term_hand_computed():
    task = Segmentation("s", num_classes=2, dice_weight=1.0)
    labels = np.array([[[0, 1]]])
    logits = np.zeros((1, 1, 2, 2))  # p = 0.5 everywhere
    loss, _ = task.compute_loss(labels, logits)
    # per class: intersection 0.5, sums 1 + 1 -> dice (2*0.5+1)/(2+1) = 2/3
    assert float(loss) == pytest.approx(math.log(2.0) + (1 - 2 / 3), rel=1e-5)


def test_all_ignored_gives_zero_loss_and_gradient():
    task = Segmentation("s", num_classes=3, dice_weight=0.5)
    logits = tf.Variable(np.random.default_rng(0).normal(size=(1, 4, 4, 3)).astype("float32"))
    with tf.GradientTape() as tape:
        loss, count = task.compute_loss(np.full((1, 4, 4, 1), 255), logits)
    assert float(loss) == 0.0 and float(count) == 0.0
    np.testing.assert_array_equal(tape.gradient(loss, logits).numpy(), 0.0)


def test_head_outputs_logits_at_input_resolution():
    trunk = trunks.get("micro_resnet", input_shape=(64, 32, 3))
    images = keras.Input((64, 32, 3))
    logits = Segmentation("s", num_classes=5).build_head(trunk(images), (64, 32, 3))
    assert tuple(logits.shape) == (None, 64, 32, 5)
    assert logits.dtype == "float32"


def test_head_convs_add_the_task_its_own_layers():
    trunk = trunks.get("micro_resnet", input_shape=(32, 32, 3))
    images = keras.Input((32, 32, 3))
    features = trunk(images)
    plain = keras.Model(images, Segmentation("s", 2, head_convs=0).build_head(features,
                                                                               (32, 32, 3)))
    deeper = keras.Model(images, Segmentation("s", 2, head_convs=2).build_head(features,
                                                                              (32, 32, 3)))
    added = {layer.name for layer in deeper.layers} - {layer.name for layer in plain.layers}
    assert added == {"s_conv2", "s_conv3"}
    width = 64  # decoder_channels: each added layer is a 3x3 conv of 64 -> 64 with a bias
    assert deeper.count_params() - plain.count_params() == 2 * (3 * 3 * width * width + width)
    assert tuple(deeper.output.shape) == (None, 32, 32, 2)
    task = Segmentation.from_config(Segmentation("s", 2, head_convs=2).get_config())
    assert task.head_convs == 2
    with pytest.raises(ValueError, match=r"Task 's'.*head_convs must be >= 0"):
        Segmentation("s", 2, head_convs=-1)


def test_default_head_has_two_convolutions_and_old_configs_keep_their_plain_head():
    config = Segmentation("s", 2).get_config()
    assert config["head_convs"] == 2
    assert Segmentation.from_config(config).head_convs == 2
    del config["head_convs"]  # a model saved before the option existed
    assert Segmentation.from_config(config).head_convs == 0
    assert Segmentation.from_config({**config, "head_convs": 1}).head_convs == 1


def test_decode_and_metrics():
    task = Segmentation("s", num_classes=2, output_probs=True)
    logits = np.zeros((1, 1, 2, 2), "float32")
    logits[0, 0, 0, 1] = 3.0
    decoded = task.decode(logits)
    np.testing.assert_array_equal(decoded["s"], [[[1, 0]]])
    assert decoded["s_probs"].shape == (1, 1, 2, 2)
    miou, accuracy = task.build_metrics()
    task.update_metrics([miou, accuracy], np.array([[[1, 255]]]), logits)
    assert float(accuracy.result()) == 1.0  # the ignored pixel does not count
    assert float(miou.result()) == pytest.approx(1.0)


def test_check_targets_errors_name_the_task():
    task = Segmentation("trimap", num_classes=3)
    with pytest.raises(ValueError, match=r"Task 'trimap'.*height and width \(32, 32\)"):
        task.check_targets(np.zeros((1, 16, 16), "int32"), (32, 32, 3))
    with pytest.raises(ValueError, match=r"Task 'trimap'.*\(B, H, W\) or \(B, H, W, 1\)"):
        task.check_targets(np.zeros((1, 32, 32, 2), "int32"), (32, 32, 3))
    with pytest.raises(tf.errors.InvalidArgumentError, match="Task 'trimap': mask class id"):
        task.check_targets(np.full((1, 32, 32), 3, "int32"), (32, 32, 3))
    checked = task.check_targets(np.full((1, 32, 32, 1), 255, "uint8"), (32, 32, 3))
    assert checked.shape == (1, 32, 32)
    with pytest.raises(ValueError, match="ignore_index 1 is a valid class id"):
        Segmentation("s", num_classes=3, ignore_index=1)


def test_model_saved_before_head_convs_existed_rebuilds_and_loads_its_weights(tmp_path):
    import keras_mtl

    model = keras_mtl.build_mtl([Segmentation("s", 2, head_convs=0)], trunk="micro_resnet",
                                weights=None, input_shape=(32, 32, 3))
    config = model.get_config()
    del config["tasks"][0]["config"]["head_convs"]  # as such a model's config reads
    rebuilt = type(model).from_config(config)
    assert rebuilt.count_params() == model.count_params()
    model.save_weights(str(tmp_path / "old.weights.h5"))
    rebuilt.load_weights(str(tmp_path / "old.weights.h5"))
    images = np.random.default_rng(0).random((1, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(rebuilt(images)["s"], model(images)["s"], atol=1e-6)
