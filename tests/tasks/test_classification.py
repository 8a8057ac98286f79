import math

import numpy as np
import pytest
import tensorflow as tf

from keras_mtl.tasks import Classification


def test_softmax_loss_on_hand_made_case():
    task = Classification("c", num_classes=2)
    loss, count = task.compute_loss(np.array([0, 1]), np.array([[2.0, 0.0], [0.0, 0.0]]))
    expected = (math.log(1 + math.exp(-2.0)) + math.log(2.0)) / 2
    assert float(count) == 2.0
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_unlabelled_and_zero_weight_samples_are_left_out():
    task = Classification("c", num_classes=2)
    logits = np.array([[2.0, 0.0], [5.0, -5.0], [0.0, 9.0]])
    loss, count = task.compute_loss(np.array([0, -1, 1]), logits, np.array([1.0, 1.0, 0.0]))
    assert float(count) == 1.0
    assert float(loss) == pytest.approx(math.log(1 + math.exp(-2.0)), rel=1e-5)


def test_no_labels_gives_zero_loss_and_zero_gradient():
    task = Classification("c", num_classes=3)
    logits = tf.Variable(np.random.default_rng(0).normal(size=(4, 3)).astype("float32"))
    with tf.GradientTape() as tape:
        loss, count = task.compute_loss(np.full((4,), -1), logits)
    gradient = tape.gradient(loss, logits)
    assert float(loss) == 0.0 and float(count) == 0.0
    np.testing.assert_array_equal(gradient.numpy(), 0.0)


def test_label_smoothing_matches_hand_computation():
    task = Classification("c", num_classes=2, label_smoothing=0.2)
    loss, _ = task.compute_loss(np.array([0]), np.array([[0.0, 0.0]]))
    assert float(loss) == pytest.approx(math.log(2.0), rel=1e-5)  # uniform logits: any target
    loss, _ = task.compute_loss(np.array([0]), np.array([[1.0, 0.0]]))
    p0 = 1 / (1 + math.exp(-1.0))
    assert float(loss) == pytest.approx(-(0.9 * math.log(p0) + 0.1 * math.log(1 - p0)), rel=1e-5)


def test_multi_label_masks_unknown_entries():
    task = Classification("tags", num_classes=3, multi_label=True)
    labels = np.array([[1, 0, -1]])
    logits = np.array([[0.0, 0.0, 50.0]])
    loss, count = task.compute_loss(labels, logits)
    assert float(count) == 2.0
    assert float(loss) == pytest.approx(math.log(2.0), rel=1e-5)
    probs = task.decode(logits)["tags"]
    np.testing.assert_allclose(probs, [[0.5, 0.5, 1.0]], atol=1e-6)


def test_decode_gives_probabilities():
    probs = Classification("c", 3).decode(np.array([[1.0, 2.0, 3.0]]))["c"]
    np.testing.assert_allclose(np.sum(probs), 1.0, rtol=1e-6)
    assert np.argmax(probs) == 2


def test_check_targets_errors_name_the_task():
    task = Classification("species", num_classes=2)
    with pytest.raises(ValueError, match="Task 'species'.*integer class ids.*float32"):
        task.check_targets(np.array([0.0, 1.0], "float32"), (32, 32))
    with pytest.raises(ValueError, match=r"Task 'species'.*shape \(B,\)"):
        task.check_targets(np.zeros((2, 3), "int32"), (32, 32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="Task 'species': class id out of range"):
        task.check_targets(np.array([0, 2], "int32"), (32, 32))
    np.testing.assert_array_equal(task.check_targets(np.array([[1], [-1]]), (32, 32)), [1, -1])


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="Task 'c'.*num_classes"):
        Classification("c", num_classes=0)
    with pytest.raises(ValueError, match="identifier"):
        Classification("my task", num_classes=2)
