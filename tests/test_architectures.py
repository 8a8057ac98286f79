"""Architectures (`keras_mtl.architectures`): each builds on a tiny trunk, trains a step,
saves and reloads; cross-stitch units start identity-like and learn; cascade refuses a
cycle; what each architecture shares with gradient-based weightings.

Written against the patched `MultiTaskModel(..., architecture=...)`,
`build_mtl(..., architecture=...)` and the gradient-balanced step (`keras_mtl.training.steps`).
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mtl as mtl
from keras_mtl import architectures
from keras_mtl.data import shapes

SIZE = 32
# Architectures that need arguments to build with the tasks of `make_tasks`.
ARGUMENTS = {"cascade": {"depends_on": {"mask": "label"}},
             # Mixtures of experts kept small (a fast run); each level's wiring is the same.
             "mmoe": {"num_experts": 2, "levels": ("P5",)},
             "cgc": {"num_shared_experts": 1, "levels": ("P5",)},
             "ple": {"num_shared_experts": 1, "levels": ("P5",)},
             "dselect_k": {"num_experts": 3, "levels": ("P5",)}}


def make_tasks(detection=False):
    tasks = [mtl.tasks.Classification("label", 3), mtl.tasks.Segmentation("mask", 4)]
    if detection:
        tasks.insert(1, mtl.tasks.Detection("objects", 3))
    return tasks


def make_architecture(name, **overrides):
    return architectures.get(name, **{**ARGUMENTS.get(name, {}), **overrides})


def tiny_model(architecture="hps", weighting="equal", tasks=None, **kwargs):
    return mtl.build_mtl(tasks or make_tasks(), trunk="micro_resnet", weights=None,
                         input_shape=(SIZE, SIZE, 3), weighting=weighting,
                         architecture=architecture, **kwargs)


def arrays(num=4, tasks=("label", "mask"), seed=0):
    dataset = shapes.make_dataset(num, image_size=SIZE, batch_size=num, tasks=list(tasks),
                                  seed=seed)
    images, targets = next(iter(dataset))
    return images.numpy(), tf.nest.map_structure(lambda t: t.numpy(), targets)


def values(variables):
    return [np.array(v.numpy()) for v in variables]


def raw_outputs(model, images):
    return {k: np.asarray(v) for k, v in model(images, training=False).items()}


# --- registry ------------------------------------------------------------------------------
def test_registry_lists_every_architecture_and_names_the_valid_ones():
    assert architectures.names() == ["adapters", "branched", "cascade", "cgc", "cross_stitch",
                                     "dselect_k", "hps", "ltb", "mmoe", "mtan", "ple", "separate",
                                     "task_norm"]
    with pytest.raises(ValueError, match="Valid names: adapters, branched, cascade"):
        architectures.get("soft_sharing")
    mtan = architectures.MTAN(reduction=2)
    assert architectures.get(mtan) is mtan
    assert isinstance(architectures.get(None), architectures.HardParameterSharing)
    restored = architectures.get({"class_name": "cascade", "config": {"depends_on": {"a": "b"}}})
    assert restored.depends_on == {"a": ["b"]}


@pytest.mark.parametrize("name", architectures.names())
def test_config_round_trips_through_keras_serialization(name):
    architecture = make_architecture(name)
    config = keras.saving.serialize_keras_object(architecture)
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(architecture)
    assert restored.get_config() == architecture.get_config()


# --- every architecture: build, one step, save and reload ----------------------------------
@pytest.mark.parametrize("name", architectures.names())
def test_builds_trains_a_step_saves_and_reloads(name, tmp_path):
    model = tiny_model(make_architecture(name))
    assert type(model.architecture).__name__ == type(make_architecture(name)).__name__
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    images, targets = arrays()
    before = values(model.trainable_variables)
    history = model.fit(images, targets, batch_size=4, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
    changed = [not np.array_equal(a, v.numpy()) for a, v in zip(before, model.trainable_variables)]
    assert sum(changed) >= 0.5 * len(changed), f"{sum(changed)}/{len(changed)} variables moved"

    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert type(restored.architecture) is type(model.architecture)
    assert restored.architecture.get_config() == model.architecture.get_config()
    assert len(restored.weights) == len(model.weights)
    expected, got = raw_outputs(model, images), raw_outputs(restored, images)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], atol=1e-4, err_msg=key)


def test_hard_sharing_is_the_default_and_shares_the_trunk():
    model = tiny_model()
    assert isinstance(model.architecture, architectures.HardParameterSharing)
    assert [id(v) for v in model.shared_variables] == [
        id(v) for v in model.trunk.trainable_variables]
    assert len(model.shared_features) == 4  # P2..P5


def test_what_each_architecture_shares():
    trunk_size = len(tiny_model().trunk.trainable_variables)
    keras.backend.clear_session()
    shared = {}
    for name in architectures.names():
        model = tiny_model(make_architecture(name))
        shared[name] = (len(model.shared_variables), len(model.shared_features))
        keras.backend.clear_session()
    assert shared["hps"] == shared["mtan"] == shared["cascade"] == (trunk_size, 4)
    assert shared["adapters"] == (0, 4)  # frozen trunk: nothing trainable is shared
    assert shared["separate"] == (0, 0)
    # Cross-stitch cut into stages: two columns and one unit per level; no feature cut.
    assert shared["cross_stitch"] == (2 * trunk_size + 4, 0)
    # Experts (conv kernel, BN gamma and beta) on P5 add to the trunk; the cut is P2..P5.
    assert shared["mmoe"] == (trunk_size + 2 * 3, 4)
    assert shared["dselect_k"] == (trunk_size + 3 * 3, 4)
    assert shared["cgc"] == (trunk_size + 3, 4)  # the private experts are not shared
    # PLE's lower layer: shared and private experts and the shared gate; top: shared expert.
    assert shared["ple"] == (trunk_size + 3 + 2 * 3 + 2 + 3, 4)
    # Learning to branch: two columns and a branching unit before P3, P4 and P5.
    assert shared["ltb"] == (2 * trunk_size + 3, 0)
    # Branched at P4 (the default): the stem and the P2, P3 stages are shared; the cut is P2, P3.
    assert 0 < shared["branched"][0] < trunk_size and shared["branched"][1] == 2
    # Task normalisation: the trunk's filters (not its normalisation layers); no feature cut.
    assert 0 < shared["task_norm"][0] < trunk_size and shared["task_norm"][1] == 0


# --- columns -------------------------------------------------------------------------------
def test_split_stages_chain_to_the_trunk_and_clones_start_equal():
    trunk = mtl.trunks.get("micro_resnet", input_shape=(SIZE, SIZE, 3))
    images, _ = arrays(2)
    expected = trunk(images)
    stages = architectures.split_stages(trunk)
    x = images
    for level in ("P2", "P3", "P4", "P5"):
        x = stages[level](x)
        np.testing.assert_allclose(x, expected[level], atol=1e-5)
    column = architectures.clone_trunk(trunk, "copy")
    assert column.name == "copy"
    assert {id(v) for v in column.weights}.isdisjoint({id(v) for v in trunk.weights})
    for level, value in column(images).items():
        np.testing.assert_allclose(value, expected[level], atol=1e-5)


def test_cross_stitch_falls_back_to_mixing_outputs_where_stages_do_not_cut():
    images = keras.Input((SIZE, SIZE, 3))
    p2 = keras.layers.Conv2D(4, 3, strides=4, padding="same")(images)
    p3 = keras.layers.Conv2D(4, 3, strides=8, padding="same")(images)  # skips P2
    p4 = keras.layers.AveragePooling2D(2)(p3)
    p5 = keras.layers.AveragePooling2D(2)(p4)
    trunk = keras.Model(images, {"P2": p2, "P3": p3, "P4": p4, "P5": p5}, name="odd_trunk")
    with pytest.raises(ValueError, match="Cannot cut trunk 'odd_trunk' into stages at P3"):
        architectures.split_stages(trunk)
    tasks = [mtl.tasks.Classification("a", 2), mtl.tasks.Classification("b", 2)]
    with pytest.warns(UserWarning, match="Mixing the columns' pyramid outputs"):
        model = mtl.MultiTaskModel(trunk, tasks, architecture="cross_stitch")
    assert len(model.shared_features) == 8  # both columns' P2..P5: rep_grad works
    with pytest.raises(ValueError, match="Cannot cut"):
        mtl.MultiTaskModel(trunk, [mtl.tasks.Classification("a", 2)],
                           architecture=architectures.CrossStitch(mode="stages"))


# --- cross-stitch units --------------------------------------------------------------------
def test_cross_stitch_units_start_identity_like_and_are_learned():
    tasks = [mtl.tasks.Classification("label", 3), mtl.tasks.Segmentation("mask", 4),
             mtl.tasks.Classification("other", 2)]
    model = tiny_model("cross_stitch", tasks=tasks)
    units = [model.get_layer(f"cross_stitch_{level}") for level in ("P2", "P3", "P4", "P5")]
    expected = np.full((3, 3), 0.05, "float32")
    np.fill_diagonal(expected, 0.9)
    for unit in units:
        np.testing.assert_allclose(unit.alpha.numpy(), expected, atol=1e-7)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    images, targets = arrays(tasks=("label", "mask"))
    targets["other"] = targets["label"] % 2
    model.fit(images, targets, batch_size=4, epochs=1, verbose=0)
    for unit in units[:3]:  # P5 only feeds the classification heads' pooled features
        assert np.abs(unit.alpha.numpy() - expected).max() > 1e-6, unit.name


def test_cross_stitch_unit_mixes_per_channel():
    unit = architectures.CrossStitchUnit(alpha_same=0.8, per_channel=True)
    a, b = unit([np.ones((1, 2, 2, 3), "float32"), np.zeros((1, 2, 2, 3), "float32")])
    assert unit.alpha.shape == (2, 2, 3)
    np.testing.assert_allclose(a, 0.8)
    np.testing.assert_allclose(b, 0.2)


# --- cascade -------------------------------------------------------------------------------
def test_dependency_order_and_cycles():
    order = architectures.dependency_order(["a", "b", "c"], {"a": ["c"], "c": ["b"]})
    assert order == ["b", "c", "a"]
    with pytest.raises(ValueError, match="cycle: a -> c -> b -> a"):
        architectures.dependency_order(["a", "b", "c"], {"a": ["c"], "c": ["b"], "b": ["a"]})
    with pytest.raises(ValueError, match="cycle: a -> a"):
        architectures.dependency_order(["a"], {"a": ["a"]})


def test_cascade_refuses_a_cycle_an_unknown_task_and_no_dependency():
    cycle = architectures.Cascade(depends_on={"mask": "label", "label": "mask"})
    with pytest.raises(ValueError, match="cycle: label -> mask -> label"):
        tiny_model(cycle)
    with pytest.raises(ValueError, match="unknown task 'depth'"):
        tiny_model(architectures.Cascade(depends_on={"depth": "mask"}))
    with pytest.raises(ValueError, match="no dependency declared"):
        tiny_model("cascade")


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_cascade_feeds_the_source_prediction_with_or_without_gradient(stop_gradient):
    architecture = architectures.Cascade(depends_on={"mask": ["objects", "label"]},
                                         stop_gradient=stop_gradient)
    model = tiny_model(architecture, tasks=make_tasks(detection=True))
    assert model.get_layer("mask_from_objects_P3").pool == "max"
    images, targets = arrays(tasks=("label", "objects", "mask"))
    sources = [model.get_layer("objects_heatmap").kernel, model.get_layer("label_logits").kernel]
    fusion = model.get_layer("mask_cascade_P2").kernel
    np.testing.assert_array_equal(fusion.numpy(), 0.0)  # starts as hard sharing
    with tf.GradientTape() as tape:
        losses, _ = model.task_losses(targets, model(images, training=True), {})
        mask_loss = losses[2]
    grads = tape.gradient(mask_loss, sources + [fusion])
    assert np.abs(grads[-1].numpy()).max() > 0  # the fusion learns
    for grad in grads[:-1]:  # zero fusion: no gradient reaches the sources yet either way
        assert grad is None or np.abs(grad.numpy()).max() == 0
    fusion.assign(np.random.default_rng(0).normal(0, 0.1, fusion.shape).astype("float32"))
    with tf.GradientTape() as tape:
        losses, _ = model.task_losses(targets, model(images, training=True), {})
        mask_loss = losses[2]
    grads = tape.gradient(mask_loss, sources)
    reached = [grad is not None and np.abs(grad.numpy()).max() > 0 for grad in grads]
    assert reached == [not stop_gradient] * 2


# --- adapters --------------------------------------------------------------------------------
def test_adapters_freeze_the_trunk_and_start_from_its_features():
    model = tiny_model("adapters")
    assert not model.trunk.trainable and model.shared_variables == []
    assert not np.any(model.get_layer("mask_adapter_P2_up").kernel.numpy())
    free = tiny_model(architectures.ResidualAdapters(freeze_trunk=False, levels=("P5",)))
    assert free.trunk.trainable and len(free.shared_variables) > 0
    with pytest.raises(ValueError):
        free.get_layer("mask_adapter_P2_up")


def test_a_frozen_trunk_without_pretrained_weights_gets_a_warning(tmp_path):
    with pytest.warns(UserWarning, match="ResidualAdapters freezes the trunk, but trunk "
                                         "'micro_resnet' has weights=None"):
        tiny_model("adapters")
    with pytest.warns(UserWarning, match="trainable_trunk=False freezes the trunk"):
        tiny_model("hps", trainable_trunk=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        tiny_model(architectures.ResidualAdapters(freeze_trunk=False, levels=("P5",)))
        tiny_model("hps")
        trained = tiny_model("hps")
        trained.trunk.save_weights(str(tmp_path / "trunk.weights.h5"))
        mtl.build_mtl(make_tasks(), trunk="micro_resnet",
                      weights=str(tmp_path / "trunk.weights.h5"),
                      input_shape=(SIZE, SIZE, 3), architecture="adapters")


# --- gradient-based weightings ---------------------------------------------------------------
def test_gradient_weighting_without_shared_parameters_falls_back_to_the_sum():
    model = tiny_model("separate", weighting="pcgrad")
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    images, targets = arrays()
    before = values(model.trainable_variables)
    with pytest.warns(UserWarning, match="nothing to balance"):
        history = model.fit(images, targets, batch_size=4, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
    moved = [not np.array_equal(a, v.numpy()) for a, v in zip(before, model.trainable_variables)]
    assert all(moved[:len(model.trunk.trainable_variables)])  # the first task's own trunk


@pytest.mark.parametrize("weighting", [pytest.param("pcgrad", marks=pytest.mark.slow),
                                       "mgda_rep_grad"])
def test_gradient_weighting_balances_the_architecture_shared_parameters(weighting):
    if weighting == "mgda_rep_grad":
        weighting = mtl.weighting.get("mgda", rep_grad=True)
    model = tiny_model("mtan", weighting=weighting)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    images, targets = arrays()
    trunk_before = values(model.trunk.trainable_variables)
    attention = model.get_layer("mask_mtan_P2_conv1").kernel
    attention_before = attention.numpy().copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # shared parameters exist: no fallback
        history = model.fit(images, targets, batch_size=4, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
    assert any(not np.array_equal(a, v.numpy())
               for a, v in zip(trunk_before, model.trunk.trainable_variables))
    assert not np.array_equal(attention.numpy(), attention_before)


@pytest.mark.parametrize("name", architectures.names())
def test_a_rep_grad_weighting_trains_every_shared_parameter(name):
    # The direction reaches the parameters before the feature cut; shared parameters after it
    # (experts on the trunk's levels, later stages shared by some tasks) get their tasks' sum.
    model = tiny_model(make_architecture(name), weighting="calibrated")
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    images, targets = arrays()
    shared = model.shared_variables
    before = values(shared)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # architectures without a cut fall back
        model.fit(images, targets, batch_size=4, epochs=1, verbose=0)
    frozen = [v.path for a, v in zip(before, shared) if np.array_equal(a, v.numpy())]
    # ltb's first branching unit chooses between P2 columns that start as identical copies:
    # its logits have a zero gradient until the columns differ.
    frozen = [path for path in frozen if path != "ltb_branch_P3/logits"]
    assert not frozen, f"{name}: shared variables that did not move: {frozen[:4]}"


# --- slow: XLA, every gradient mode, export --------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", architectures.names())
@pytest.mark.parametrize("weighting", ["uncertainty", "pcgrad", "rep_grad"])
def test_jit_compiled_step_with_every_kind_of_weighting(name, weighting):
    if weighting == "rep_grad":
        weighting = mtl.weighting.get("mgda", rep_grad=True)
    model = tiny_model(make_architecture(name), weighting=weighting,
                       tasks=make_tasks(detection=True))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=True)
    images, targets = arrays(tasks=("label", "objects", "mask"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # separate / adapters: nothing shared
        history = model.fit(images, targets, batch_size=4, epochs=2, verbose=0).history
    assert all(np.isfinite(history["loss"]))


@pytest.mark.slow
@pytest.mark.parametrize("name", architectures.names())
def test_exports_a_saved_model_that_serves_decoded_outputs(name, tmp_path):
    from keras_mtl.export import check_export

    model = tiny_model(make_architecture(name), tasks=make_tasks(detection=True))
    images, _ = arrays(tasks=("label",))
    path = str(tmp_path / name)
    model.export(path, verbose=False)
    differences = check_export(model, path, images)
    assert set(differences) >= {"label", "mask", "objects_boxes"}


@pytest.mark.slow
def test_cross_stitch_cuts_keras_applications_resnet_into_stages():
    trunk = mtl.trunks.get("resnet50", input_shape=(64, 64, 3), weights=None)
    stages = architectures.split_stages(trunk)
    images = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    expected, x = trunk(images), images
    for level in ("P2", "P3", "P4", "P5"):
        x = stages[level](x)
    np.testing.assert_allclose(x, expected["P5"], atol=1e-4)
