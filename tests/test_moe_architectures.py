"""Mixture-of-experts architectures (`mmoe`, `cgc`, `ple`, `dselect_k`): what only they
promise. The shared harness (build, a step, save/reload, export, XLA) is in
`test_architectures.py`.

MMoE with one expert is hard sharing plus an expert block; CGC's and PLE's private experts
are reached by their own task only (PLE's lower ones by every task, through the shared gate);
each model says what it shares; DSelect-k's selector in closed form (smooth-step, one-hot
and k-sparse weights for saturated logits, the penalties); `gate_loads` and
`GateLoadMonitor` (the loads in the training logs).
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


def make_tasks():
    return [mtl.tasks.Classification("label", 3), mtl.tasks.Segmentation("mask", 4)]


def tiny_model(architecture, weighting="equal"):
    return mtl.build_mtl(make_tasks(), trunk="micro_resnet", weights=None,
                         input_shape=(SIZE, SIZE, 3), weighting=weighting,
                         architecture=architecture)


def arrays(num=4):
    dataset = shapes.make_dataset(num, image_size=SIZE, batch_size=num,
                                  tasks=["label", "mask"], seed=0)
    images, targets = next(iter(dataset))
    return images.numpy(), tf.nest.map_structure(lambda t: t.numpy(), targets)


def variables_of(model, name):
    return model.get_layer(name).trainable_variables


def reached(model, images, targets, task_index, layer_names):
    """Per layer: does task `task_index`'s loss have a non-zero gradient on its variables?"""
    groups = [variables_of(model, name) for name in layer_names]
    with tf.GradientTape() as tape:
        losses, _ = model.task_losses(targets, model(images, training=True), {})
        loss = losses[task_index]
    grads = tape.gradient(loss, [v for group in groups for v in group])
    out, start = [], 0
    for group in groups:
        part = grads[start:start + len(group)]
        start += len(group)
        out.append(any(g is not None and np.abs(g.numpy()).max() > 0 for g in part))
    return out


# --- MMoE ----------------------------------------------------------------------------------
def test_mmoe_with_one_expert_is_hard_sharing_plus_an_expert_block():
    model = tiny_model(architectures.MMoE(num_experts=1, levels=("P4", "P5")))
    images, _ = arrays()
    gates = [model.get_layer(f"{task}_mmoe_gate_{level}")
             for task in ("label", "mask") for level in ("P4", "P5") if task == "mask"
             or level == "P5"]
    mixes = [model.get_layer(gate.name.replace("gate", "mix")) for gate in gates]
    experts = [model.get_layer(f"mmoe_expert0_{gate.name[-2:]}") for gate in gates]
    view = keras.Model(model.input, [[g.output for g in gates], [m.output for m in mixes],
                                     [e.output for e in experts]])
    weights, mixed, expert_out = view(images, training=False)
    for w, m, e in zip(weights, mixed, expert_out):
        np.testing.assert_array_equal(w.numpy(), 1.0)  # softmax of one logit: exactly 1
        np.testing.assert_allclose(m.numpy(), e.numpy(), rtol=1e-6)  # the expert, unmixed
    loads = architectures.gate_loads(model, images)
    assert {name: load.tolist() for name, load in loads.items()} == {"label": [1.0],
                                                                     "mask": [1.0]}


def test_mmoe_shares_the_trunk_and_every_expert_and_balances_them():
    model = tiny_model(architectures.MMoE(num_experts=2, levels=("P5",)), weighting="pcgrad")
    trunk = model.trunk.trainable_variables
    experts = [v for e in range(2) for v in variables_of(model, f"mmoe_expert{e}_P5")]
    assert [id(v) for v in model.shared_variables] == [id(v) for v in trunk + experts]
    assert len(model.shared_features) == 4  # the trunk's P2..P5
    model.compile(optimizer=keras.optimizers.SGD(0.05), run_eagerly=True)  # no tracing: fast
    images, targets = arrays()
    before = [v.numpy().copy() for v in experts]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # shared parameters exist: no fallback
        history = model.fit(images, targets, batch_size=4, epochs=1, verbose=0,
                            callbacks=[mtl.callbacks.GateLoadMonitor(images)]).history
    assert np.isfinite(history["loss"][0])
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before, experts))
    for task in ("label", "mask"):  # the gates' loads are in the logs
        loads = [history[f"gate_load/{task}/{e}"][0] for e in range(2)]
        assert min(loads) > 0 and abs(sum(loads) - 1) < 1e-5


def test_top_k_gate_keeps_k_experts():
    gate = architectures.SoftmaxGate(5, gate="top_k", top_k=2)
    weights = gate(np.random.default_rng(0).normal(size=(6, 8)).astype("float32")).numpy()
    assert (np.count_nonzero(weights, axis=1) == 2).all()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="gate must be one of"):
        architectures.MMoE(gate="noisy")


# --- CGC / PLE -------------------------------------------------------------------------------
def test_cgc_private_experts_are_reached_only_by_their_task():
    model = tiny_model(architectures.CGC(num_shared_experts=1, num_task_experts=1,
                                         levels=("P4", "P5")))
    images, targets = arrays()
    names = ["cgc_shared_expert_P5_0", "label_cgc_expert_P5_0", "mask_cgc_expert_P5_0",
             "mask_cgc_expert_P4_0"]
    assert reached(model, images, targets, 0, names) == [True, True, False, False]  # label
    assert reached(model, images, targets, 1, names) == [True, False, True, True]  # mask
    trunk = len(model.trunk.trainable_variables)
    shared = sum(len(variables_of(model, f"cgc_shared_expert_{lv}_0")) for lv in ("P4", "P5"))
    assert len(model.shared_variables) == trunk + shared  # private experts are not shared


def test_ple_top_private_experts_are_private_and_lower_ones_shared():
    model = tiny_model(architectures.PLE(num_layers=2, num_shared_experts=1, num_task_experts=1,
                                         levels=("P5",)))
    images, targets = arrays()
    names = ["mask_ple1_expert_P5_0", "label_ple1_expert_P5_0", "mask_ple0_expert_P5_0",
             "ple0_shared_gate_P5"]
    # Task label: not its sibling's top expert; the sibling's lower expert through the
    # shared gate.
    assert reached(model, images, targets, 0, names) == [False, True, True, True]
    shared_ids = {id(v) for v in model.shared_variables}
    for name, shared in zip(names, [False, False, True, True]):
        assert all((id(v) in shared_ids) == shared for v in variables_of(model, name)), name
    loads = architectures.gate_loads(model, images)
    assert [load.shape for load in loads.values()] == [(2,), (2,)]  # 1 shared + 1 own


def test_ple_with_one_layer_is_cgc_and_checks_its_arguments():
    assert architectures.PLE(num_layers=1).get_config() == {
        "num_layers": 1, **architectures.CGC().get_config()}
    with pytest.raises(ValueError, match="at least one expert"):
        architectures.CGC(num_shared_experts=0, num_task_experts=0)
    with pytest.raises(ValueError, match="need a shared expert"):
        architectures.PLE(num_layers=2, num_shared_experts=0)


# --- DSelect-k -------------------------------------------------------------------------------
def test_smooth_step_closed_form():
    gamma = 2.0
    t = np.array([-5.0, -1.0, -0.5, 0.0, 0.5, 1.0, 5.0], "float32")
    cubic = -2 / gamma**3 * t**3 + 3 / (2 * gamma) * t + 0.5
    expected = np.where(t <= -1, 0.0, np.where(t >= 1, 1.0, cubic))
    np.testing.assert_allclose(architectures.smooth_step(t, gamma), expected, atol=1e-7)
    assert float(architectures.smooth_step(np.float32(0.0), gamma)) == 0.5


def saturated_gate(num_experts, codes_to_select, w_logits, width=8):
    """A DSelectGate whose selector i saturates on expert `codes_to_select[i]`."""
    gate = architectures.DSelectGate(num_experts, num_selectors=len(codes_to_select))
    gate.build((None, width))
    bits = architectures.gates.binary_codes(num_experts)  # (E, m)
    z_bias = np.concatenate([np.where(bits[e] > 0, 10.0, -10.0) for e in codes_to_select])
    gate.z_logits.kernel.assign(np.zeros_like(gate.z_logits.kernel.numpy()))
    gate.z_logits.bias.assign(z_bias.astype("float32"))
    gate.w_logits.kernel.assign(np.zeros_like(gate.w_logits.kernel.numpy()))
    gate.w_logits.bias.assign(np.asarray(w_logits, "float32"))
    return gate


def test_dselect_gate_is_one_hot_or_k_sparse_for_saturated_selectors():
    x = np.random.default_rng(0).normal(size=(5, 8)).astype("float32")
    one = saturated_gate(8, [5], [0.0])(x).numpy()
    np.testing.assert_array_equal(one, np.tile(np.eye(8, dtype="float32")[5], (5, 1)))
    two = saturated_gate(8, [1, 6], [0.0, np.log(3.0)])(x).numpy()  # softmax: 1/4, 3/4
    expected = np.zeros(8, "float32")
    expected[[1, 6]] = [0.25, 0.75]
    np.testing.assert_allclose(two, np.tile(expected, (5, 1)), rtol=1e-6)
    assert (np.count_nonzero(two, axis=1) == 2).all()


def test_dselect_gate_weights_sum_to_one_and_its_penalties():
    x = np.random.default_rng(1).normal(size=(4, 8)).astype("float32")
    gate = architectures.DSelectGate(4, num_selectors=3, gamma=0.5)
    gate.build((None, 8))
    gate.z_logits.kernel.assign(np.random.default_rng(2).normal(
        size=gate.z_logits.kernel.shape).astype("float32"))  # unsaturated and saturated units
    weights = gate(x, training=True).numpy()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)  # E = 2^m
    r = gate.selectors(x).numpy()  # (B, k, E)
    entropy = -(r * np.log(r + 1e-6)).sum(axis=(1, 2)).mean()
    np.testing.assert_allclose(float(gate.losses[0]), 1e-6 * entropy, rtol=1e-4)
    # E = 3: code 11 selects no expert; the penalty sum_i 1 / sum_e r_ie keeps selectors on
    # valid codes (1 per selector once they are).
    odd = saturated_gate(3, [2], [0.0])
    odd(x, training=True)
    np.testing.assert_allclose(float(odd.losses[0]), 1.0 + 1e-6 * 0.0, atol=1e-5)
    assert not saturated_gate(4, [2], [0.0], width=8).losses


def test_dselect_k_model_adds_its_penalty_and_reports_gate_loads():
    model = tiny_model(architectures.DSelectK(num_experts=3, num_selectors=1, levels=("P5",)))
    images, _ = arrays()
    model(images, training=True)
    assert len(model.losses) == 2  # one gate per task at P5, E = 3: validity penalty
    loads = architectures.gate_loads(model, images)
    assert list(loads) == ["label", "mask"]
    for load in loads.values():
        assert load.shape == (3,) and (load >= 0).all() and load.sum() <= 1.0 + 1e-6


def test_gate_loads_needs_gates():
    with pytest.raises(ValueError, match="no task gates"):
        architectures.gate_loads(tiny_model("hps"), np.zeros((1, SIZE, SIZE, 3), "float32"))
