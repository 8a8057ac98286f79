"""Learning to branch (`ltb`): the branching unit's routing (argmax tree at inference,
one-hot Gumbel samples with a straight-through gradient in training, soft samples), and a
task's path. The shared harness (build, a step, save/reload, export, XLA) is in
`test_architectures.py`.
"""

import keras
import numpy as np
import tensorflow as tf

import keras_mtl as mtl
from keras_mtl import architectures


def parents(n=3, shape=(2, 4)):
    return [np.full(shape, float(p + 1), "float32") for p in range(n)]


def test_inference_follows_the_argmax_tree():
    unit = architectures.BranchingUnit(3)
    unit.build(None)
    unit.logits.assign(np.array([[0, 5, 0], [0, 0, 5], [0, 5, 0]], "float32"))
    children = unit(parents(), training=False)
    assert [float(c[0, 0]) for c in children] == [2.0, 3.0, 2.0]
    # Two groups (two levels): the same routing for both.
    grouped = unit(parents() + [10 * p for p in parents()], training=False)
    assert [float(c[0, 0]) for c in grouped] == [2.0, 3.0, 2.0, 20.0, 30.0, 20.0]


def test_training_samples_one_hot_rows_with_a_straight_through_gradient():
    unit = architectures.BranchingUnit(3, seed=0)
    unit.build(None)
    x = parents()
    with tf.GradientTape() as tape:
        children = unit(x, training=True)
        loss = tf.add_n([tf.reduce_sum(c * (i + 1.0)) for i, c in enumerate(children)])
    values = sorted({float(c[0, 0]) for c in children})
    assert set(values) <= {1.0, 2.0, 3.0}  # each child is exactly one parent
    grad = tape.gradient(loss, unit.logits).numpy()
    assert np.abs(grad).max() > 0  # the soft sample's gradient reaches the logits
    routing = unit.routing(training=True).numpy()
    np.testing.assert_array_equal(np.sort(routing, axis=1)[:, :2], 0.0)
    np.testing.assert_allclose(routing.sum(axis=1), 1.0, rtol=1e-6)
    soft = architectures.BranchingUnit(3, hard=False, seed=0)
    soft.build(None)
    weights = soft.routing(training=True).numpy()
    assert (weights > 0).all() and np.allclose(weights.sum(axis=1), 1.0)


def test_a_task_reads_the_features_on_its_path():
    tasks = [mtl.tasks.Classification("label", 3), mtl.tasks.Segmentation("mask", 4)]
    model = mtl.build_mtl(tasks, trunk="micro_resnet", weights=None, input_shape=(32, 32, 3),
                          architecture=architectures.LTB(seed=1))
    assert model.shared_features == []
    for layer in model.layers:  # the mask column differs from the first column
        if layer.name.startswith("trunk_micro_resnet_mask"):
            for variable in layer.trainable_variables:
                variable.assign(variable * 1.5)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    first = model.trunk(images, training=False)["P2"].numpy()
    own = model.get_layer("trunk_micro_resnet_mask_P2")(images, training=False).numpy()
    assert np.abs(first - own).max() > 1e-3
    view = keras.Model(model.input, model.get_layer("mask_lateral_P2").input)
    for logits, expected in (([[5.0, 0.0], [5.0, 0.0]], first),  # mask branches from column 0
                             ([[5.0, 0.0], [0.0, 5.0]], own)):  # its own column
        for level in ("P3", "P4", "P5"):
            model.get_layer(f"ltb_branch_{level}").logits.assign(np.array(logits, "float32"))
        np.testing.assert_allclose(view(images, training=False), expected, atol=1e-5)
