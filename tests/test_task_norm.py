"""The task-normalisation architecture (`task_norm`): the trunk's filters are shared, its
normalisation layers are each task's own and start from the trunk's, and one task's loss reaches
the shared filters and its own normalisation layers only. The shared harness (build, a step,
save/reload, export, XLA) is in `test_architectures.py`.
"""

import keras
import numpy as np
import tensorflow as tf

import keras_mtl as mtl
from keras_mtl import architectures

SIZE = 32


def build(tasks):
    return mtl.build_mtl(tasks, trunk="micro_resnet", weights=None, input_shape=(SIZE, SIZE, 3),
                         architecture="task_norm")


def two_tasks():
    return [mtl.tasks.Classification("label", 3), mtl.tasks.Segmentation("mask", 4)]


def ids(variables):
    return {id(variable) for variable in variables}


def images(seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")


def norm_layers(model):
    """The BatchNorm layers inside `model`, nested models opened, in order."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(norm_layers(layer))
        elif isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
    return found


def test_the_filters_are_shared_and_each_task_has_its_own_normalisation():
    model = build(two_tasks())
    first, second = (model.get_layer(name) for name in ("trunk_micro_resnet",
                                                        "trunk_micro_resnet_mask"))
    first_norms, second_norms = norm_layers(first), norm_layers(second)
    assert len(first_norms) == len(second_norms) > 0
    norm_ids = ids(v for layer in first_norms + second_norms for v in layer.weights)
    filters = [v for v in first.trainable_variables if id(v) not in norm_ids]
    assert ids(model.shared_variables) == ids(filters)  # shared: the filters, no norm layer
    assert ids(second.weights) - norm_ids == ids(first.weights) - norm_ids
    assert not ids(first_norms[0].weights) & ids(second_norms[0].weights)
    assert model.shared_features == []


def test_copies_start_from_the_trunks_normalisation_weights_and_then_are_their_own():
    trunk = mtl.trunks.get("micro_resnet", input_shape=(SIZE, SIZE, 3))
    for layer in norm_layers(trunk):  # as a pretrained trunk would have them
        layer.set_weights([np.full(w.shape, value, "float32")
                           for w, value in zip(layer.get_weights(), (1.5, 0.2, 0.1, 2.0))])
    copy, norms = architectures.task_normalized_trunk(trunk, "trunk_copy")
    assert len(norms) == len(norm_layers(trunk))
    expected, got = trunk(images(), training=False), copy(images(), training=False)
    for level in expected:
        np.testing.assert_allclose(got[level], expected[level], atol=1e-5, err_msg=level)
    norms[0].gamma.assign(norms[0].gamma * 0.0)  # switch the copy's first channels off
    after = copy(images(), training=False)
    assert np.abs(np.asarray(after["P5"]) - np.asarray(expected["P5"])).max() > 1e-3
    np.testing.assert_allclose(trunk(images(), training=False)["P5"], expected["P5"], atol=1e-6)


def test_a_tasks_loss_reaches_the_shared_filters_and_its_own_normalisation_only():
    model = build(two_tasks())
    first, second = (model.get_layer(name) for name in ("trunk_micro_resnet",
                                                        "trunk_micro_resnet_mask"))
    label_norms = [v for layer in norm_layers(first) for v in layer.trainable_variables]
    mask_norms = [v for layer in norm_layers(second) for v in layer.trainable_variables]
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(images(), training=True)["mask"])
    grads = tape.gradient(loss, label_norms + mask_norms + model.shared_variables)
    count = len(label_norms)
    assert all(g is None for g in grads[:count])  # not the label task's normalisation
    assert all(g is not None for g in grads[count:])  # its own and the shared filters


def test_each_task_keeps_its_own_batch_statistics():
    model = build(two_tasks())
    first, second = (model.get_layer(name) for name in ("trunk_micro_resnet",
                                                        "trunk_micro_resnet_mask"))
    before = np.array(norm_layers(second)[-1].moving_mean)
    model(images(), training=True)
    # Both tasks saw the same batch through the same first filters: the first layer's
    # statistics move alike, and each copy's moved (the trunk's own did too).
    np.testing.assert_allclose(norm_layers(second)[0].moving_mean,
                               norm_layers(first)[0].moving_mean, atol=1e-5)
    assert np.abs(np.array(norm_layers(second)[-1].moving_mean) - before).max() > 0
