"""The branched architecture (`branched`): which stages are shared and which are each task's,
that private branches start from the trunk's weights, that a task's loss never reaches another
task's branch, and its errors. The shared harness (build, a step, save/reload, export, XLA)
is in `test_architectures.py`.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mtl as mtl
from keras_mtl import architectures
from keras_mtl.data import shapes

SIZE = 32


def build(tasks, **options):
    return mtl.build_mtl(tasks, trunk="micro_resnet", weights=None, input_shape=(SIZE, SIZE, 3),
                         architecture=architectures.Branched(**options))


def two_tasks():
    return [mtl.tasks.Classification("label", 3), mtl.tasks.Segmentation("mask", 4)]


def three_tasks():
    return [mtl.tasks.Classification("label", 3), mtl.tasks.Detection("objects", 3),
            mtl.tasks.Segmentation("mask", 4)]


def ids(variables):
    return [id(variable) for variable in variables]


def images(seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")


def gradients(model, task, variables):
    """The gradients of the sum of `task`'s raw output with respect to `variables`."""
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.nest.flatten(model(images(), training=True)[task]))
    return tape.gradient(loss, variables)


def test_every_task_gets_its_own_later_stages_starting_from_the_trunks_weights():
    model = build(two_tasks(), branch_at="P4")
    early = [model.get_layer(f"trunk_micro_resnet_{name}") for name in ("P2", "inner_P3")]
    assert ids(model.shared_variables) == ids(early[0].trainable_variables
                                              + early[1].trainable_variables)
    assert len(model.shared_features) == 2  # the cut: P2, P3
    first, own = (model.get_layer(f"trunk_micro_resnet_{name}_P4") for name in ("inner", "mask"))
    assert not set(ids(first.weights)) & set(ids(own.weights))
    p3 = np.random.default_rng(1).normal(size=(2,) + tuple(first.input.shape[1:]))
    np.testing.assert_allclose(own(p3), first(p3), atol=1e-6)  # the copy starts equal
    for variable in own.trainable_variables:
        variable.assign(variable * 1.5)
    assert np.abs(np.asarray(own(p3)) - np.asarray(first(p3))).max() > 1e-3  # and is its own


def test_a_tasks_loss_reaches_the_shared_stages_but_not_another_tasks_branch():
    model = build(two_tasks(), branch_at="P4")
    mask_branch = [v for name in ("mask_P4", "mask_P5")
                   for v in model.get_layer(f"trunk_micro_resnet_{name}").trainable_variables]
    label_branch = [v for name in ("inner_P4", "inner_P5")
                    for v in model.get_layer(f"trunk_micro_resnet_{name}").trainable_variables]
    from_label = gradients(model, "label", mask_branch + label_branch + model.shared_variables)
    count = len(mask_branch)
    assert all(g is None for g in from_label[:count])
    assert all(g is not None for g in from_label[count:])
    from_mask = gradients(model, "mask", label_branch + mask_branch)
    assert all(g is None for g in from_mask[:len(label_branch)])
    assert all(g is not None for g in from_mask[len(label_branch):])


def test_tasks_that_are_not_private_share_the_trunks_later_stages():
    model = build(three_tasks(), branch_at="P5", private="mask")
    names = sorted(layer.name for layer in model.layers if layer.name.startswith("trunk"))
    assert names == ["trunk_micro_resnet_P2", "trunk_micro_resnet_inner_P3",
                     "trunk_micro_resnet_inner_P4", "trunk_micro_resnet_inner_P5",
                     "trunk_micro_resnet_mask_P5"]
    assert len(model.shared_features) == 4  # P2, P3, P4 and the shared P5's output
    # label and objects share the trunk's P5: every trunk stage is shared.
    assert ids(model.shared_variables) == ids(model.trunk.trainable_variables)
    shared_p5 = model.get_layer("trunk_micro_resnet_inner_P5").trainable_variables
    assert all(g is not None for g in gradients(model, "label", shared_p5))
    assert all(g is None for g in gradients(model, "mask", shared_p5))


def test_a_rep_grad_weighting_trains_the_later_stages_that_tasks_share():
    # The trunk's P5 is shared by label and objects, after the early levels: the cut must
    # include its output, or a rep_grad weighting would leave it where it started.
    model = mtl.build_mtl(three_tasks(), trunk="micro_resnet", weights=None,
                          input_shape=(SIZE, SIZE, 3), weighting="calibrated",
                          architecture=architectures.Branched(branch_at="P5", private="mask"))
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    stages = {name: model.get_layer(f"trunk_micro_resnet_{name}")
              for name in ("P2", "inner_P5", "mask_P5")}
    before = {name: [np.array(v) for v in stage.trainable_variables]
              for name, stage in stages.items()}
    data = shapes.make_dataset(4, image_size=SIZE, batch_size=4,
                               tasks=["label", "objects", "mask"], seed=0)
    model.fit(data, epochs=1, verbose=0)
    for name, stage in stages.items():
        moved = [not np.array_equal(a, v) for a, v in zip(before[name], stage.trainable_variables)]
        assert all(moved), f"{name}: {sum(moved)}/{len(moved)} variables moved"


def test_one_private_task_leaves_the_others_single_branch_unshared():
    model = build(two_tasks(), branch_at="P3", private=["mask"])
    early = model.get_layer("trunk_micro_resnet_P2").trainable_variables
    assert ids(model.shared_variables) == ids(early)  # label alone reads the trunk's P3-P5
    assert len(model.shared_features) == 1


def test_bad_branch_points_and_unknown_tasks_are_named():
    with pytest.raises(ValueError, match="branch_at must be one of.*'P2'"):
        architectures.Branched(branch_at="P2")
    with pytest.raises(ValueError, match=r"private names unknown task\(s\) \['person'\]"):
        build(two_tasks(), private=["person"])
