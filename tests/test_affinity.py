"""Task affinity (TAG lookahead), groupings and the `analyse` report (issue 10)."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import keras_mtl
from keras_mtl import analysis
from keras_mtl.tasks import Classification

LR = 0.5


def tiny_model(names=("a", "b", "c")):
    images = keras.Input((32, 32, 3))
    x = layers.Rescaling(1 / 255.0)(images)
    p2 = layers.Conv2D(4, 3, strides=4, padding="same", name="trunk_conv")(x)  # (B, 8, 8, 4)
    p2 = layers.BatchNormalization(name="trunk_bn")(p2)
    p3 = layers.AveragePooling2D(2)(p2)
    p4 = layers.AveragePooling2D(2)(p3)
    p5 = layers.Dense(8, activation="relu", name="trunk_dense")(layers.AveragePooling2D(2)(p4))
    trunk = keras.Model(images, {"P2": p2, "P3": p3, "P4": p4, "P5": p5}, name="tiny_trunk")
    tasks = [Classification(name, 2) for name in names]
    return keras_mtl.MultiTaskModel(trunk, tasks, weighting="equal")


def opposite_batch(num=16):
    """Task b's label is the opposite of a's; c is the same as a."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (num, 32, 32, 3)).astype("uint8")
    labels = rng.integers(0, 2, num).astype("int32")
    return images, {"a": labels, "b": 1 - labels, "c": labels.copy()}


def same_heads(model):
    """Every head starts as a's, so only the targets tell the tasks apart."""
    weights = model.get_layer("a_logits").get_weights()
    for name in model.task_names[1:]:
        model.get_layer(f"{name}_logits").set_weights(weights)


def test_lookahead_matches_hand_computation_and_restores_the_model():
    images, targets = opposite_batch()
    model = tiny_model()
    same_heads(model)
    before = [v.numpy().copy() for v in model.variables]
    affinity = analysis.task_affinity(model, (images, targets), steps=1, learning_rate=LR,
                                      train=False)
    for b, v in zip(before, model.variables):  # weights and BatchNorm statistics restored
        np.testing.assert_array_equal(b, v.numpy())

    # By hand for (i, j) = (a, b): an SGD step of the trunk on L_a, then L_b.
    shared = model.trunk.trainable_variables
    with tf.GradientTape() as tape:
        losses, _ = model.task_losses(targets, model(images, training=True), {})
        loss_a = losses[0]
    grads = tape.gradient(loss_a, shared)
    for v, g in zip(shared, grads):
        v.assign_sub(LR * g)
    after, _ = model.task_losses(targets, model(images, training=True), {})
    expected = 1.0 - after.numpy() / losses.numpy()
    np.testing.assert_allclose(affinity[0], expected, rtol=1e-3, atol=1e-6)


def test_self_affinity_positive_and_opposite_targets_negative():
    images, targets = opposite_batch()
    model = tiny_model()
    same_heads(model)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    dataset = tf.data.Dataset.from_tensor_slices((images, targets)).batch(8)
    details = analysis.task_affinity(model, dataset, steps=4, interval=2, learning_rate=LR,
                                     return_details=True)
    affinity = details["affinity"]
    assert affinity.shape == (3, 3) and details["affinity_steps"].shape == (2, 3, 3)
    assert np.all(np.diag(affinity) > 0)
    assert affinity[0, 1] < 0 and affinity[1, 0] < 0  # opposite targets hurt each other
    assert affinity[0, 2] > 0 and affinity[2, 0] > 0  # identical targets help
    assert details["cosine"][0, 1] < 0 < details["cosine"][0, 2]
    assert details["conflict_fraction"] == pytest.approx(2 / 3)
    groups, _ = analysis.propose_groups(affinity, 2, details["task_names"])
    assert groups == [("a", "c"), ("b",)]


def test_propose_groups_on_a_hand_made_matrix():
    # Two clusters, {0, 1} and {2, 3}, hostile to each other; 4 helps 0 a little.
    affinity = np.array([
        [0.9, 0.5, -0.4, -0.3, 0.0],
        [0.6, 0.9, -0.2, -0.5, 0.0],
        [-0.3, -0.1, 0.9, 0.7, 0.0],
        [-0.2, -0.4, 0.4, 0.9, 0.0],
        [0.1, -0.3, -0.1, -0.1, 0.9],
    ])
    names = ["p", "q", "r", "s", "t"]
    groups, score = analysis.propose_groups(affinity, 2, names)
    assert groups == [("p", "q", "t"), ("r", "s")]
    # Onto p: mean(0.6, 0.1); q: mean(0.5, -0.3); t: mean(0, 0); r: 0.4; s: 0.7.
    assert score == pytest.approx(0.35 + 0.1 + 0.0 + 0.4 + 0.7)
    groups, score = analysis.propose_groups(affinity, 3, names)
    assert groups == [("p", "q"), ("r", "s"), ("t",)]
    assert score == pytest.approx(0.6 + 0.5 + 0.4 + 0.7)
    assert analysis.propose_groups(affinity, 1, names)[0] == [tuple(names)]
    assert analysis.propose_groups(affinity, 5)[0] == [(0,), (1,), (2,), (3,), (4,)]
    # Overlapping groups (the paper's selection): t may join p's group without hurting q.
    groups, score = analysis.propose_groups(affinity, 3, names, overlapping=True)
    assert score == pytest.approx(0.6 + 0.5 + 0.4 + 0.7 + 0.0)
    assert analysis.propose_groups(affinity, 2, reduction="max")[1] >= score
    # Exhaustive: the best of all partitions.
    best = max(analysis.grouping_score(affinity, p) for p in analysis.partitions(range(5), 2))
    assert analysis.propose_groups(affinity, 2)[1] == pytest.approx(best)
    assert len(list(analysis.partitions(range(5), 2))) == 15  # S(5, 2)
    with pytest.raises(ValueError, match="k must be"):
        analysis.propose_groups(affinity, 6)
    with pytest.raises(ValueError, match="square"):
        analysis.propose_groups(affinity[:2], 1)


def test_analyse_prints_saves_and_restores(tmp_path, capsys):
    images, targets = opposite_batch()
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    dataset = tf.data.Dataset.from_tensor_slices((images, targets)).batch(8)
    before = [v.numpy().copy() for v in model.variables]
    report = analysis.analyse(model, dataset, str(tmp_path), steps=2, interval=1,
                              learning_rate=LR)
    for b, v in zip(before, model.variables):
        np.testing.assert_array_equal(b, v.numpy())
    assert int(model.optimizer.iterations.numpy()) == 0
    printed = capsys.readouterr().out
    assert "Task affinity" in printed and "Conflict fraction" in printed
    assert os.path.getsize(report["png"]) > 1000
    with open(tmp_path / "analysis.json") as file:
        saved = json.load(file)
    assert np.asarray(saved["affinity"]).shape == (3, 3)
    assert "2" in saved["groups"]
