"""Loss-based weightings: hand-worked numbers, missing tasks, a jit-compiled fit."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import keras_mtl
from keras_mtl import weighting as weighting_lib
from keras_mtl.tasks import Classification, Segmentation

# Every registered loss-based weighting with state or adaptive weights; the three with
# hand-worked tests of their own (equal, static, uncertainty) are covered separately.
HAND_TESTED = {"equal", "static", "uncertainty"}
LOSS_METHODS = sorted(name for name in weighting_lib.names() if name not in HAND_TESTED
                      and not weighting_lib.get(name).gradient_based)
# Small warm-ups so a short run reaches every phase.
FAST = {"stch": {"warmup_epochs": 0}, "dwa": {"steps_per_epoch": 1}}


def make(name, num_tasks=2, **kwargs):
    weighting = weighting_lib.get(name, **{**FAST.get(name, {}), **kwargs})
    weighting.set_tasks([Classification(f"t{i}", 2) for i in range(num_tasks)])
    return weighting


def call(weighting, losses, present=None, training=True):
    losses = np.asarray(losses, "float32")
    present = np.ones_like(losses) if present is None else np.asarray(present, "float32")
    return float(weighting(losses, present, training=training))


def weights_of(weighting):
    return ops.convert_to_numpy(weighting.current_weights())


def loss_and_grad(weighting, losses, present, training=True):
    """Total and its gradient with respect to the losses `(T,)`."""
    losses = tf.constant(losses, "float32")
    with tf.GradientTape() as tape:
        tape.watch(losses)
        total = weighting(losses, tf.constant(present, "float32"), training=training)
    return float(total), tape.gradient(total, losses).numpy()


def state_of(weighting):
    """Every statistic of the weighting except the logged weights and RNG state."""
    return {
        v.path: ops.convert_to_numpy(v) for v in weighting.variables
        if not v.path.endswith(("task_weights", "seed_generator_state"))
    }


def softmax(x):
    e = np.exp(np.asarray(x, "float64") - np.max(x))
    return e / e.sum()


# --- hand-worked cases -----------------------------------------------------------------------
def test_dwa_uses_the_epoch_averages_of_the_last_two_epochs():
    weighting = make("dwa", num_tasks=3, steps_per_epoch=2, temperature=2.0)
    epochs = [  # two batches per epoch
        [[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]],  # averages (2, 2, 2)
        [[1.0, 2.0, 4.0], [1.0, 2.0, 2.0]],  # averages (1, 2, 3)
    ]
    for epoch in epochs:
        for losses in epoch:
            call(weighting, losses)
            np.testing.assert_allclose(weights_of(weighting), np.ones(3))  # first two epochs
    total = call(weighting, [0.5, 1.0, 1.5])  # epoch 2: r = (1/2, 2/2, 3/2)
    expected = 3 * softmax(np.array([0.5, 1.0, 1.5]) / 2.0)
    np.testing.assert_allclose(weights_of(weighting), expected, rtol=1e-5)
    np.testing.assert_allclose(total, np.dot(expected, [0.5, 1.0, 1.5]), rtol=1e-5)
    assert abs(weights_of(weighting).sum() - 3.0) < 1e-5
    # Weights hold for the rest of epoch 2, then move to the averages of epochs 1 and 2.
    call(weighting, [1.5, 1.0, 1.5])  # epoch 2 averages (1, 1, 1.5)
    np.testing.assert_allclose(weights_of(weighting), expected, rtol=1e-5)
    call(weighting, [1.0, 1.0, 1.0])
    expected = 3 * softmax(np.array([1 / 1, 1 / 2, 1.5 / 3]) / 2.0)
    np.testing.assert_allclose(weights_of(weighting), expected, rtol=1e-5)


def test_rlw_weights_sum_to_one_and_repeat_for_a_seed():
    def draws(seed):
        weighting = make("rlw", num_tasks=3, seed=seed)
        rows = []
        for _ in range(3):
            total = call(weighting, [1.0, 2.0, 3.0])
            rows.append(weights_of(weighting))
            np.testing.assert_allclose(total, np.dot(rows[-1], [1.0, 2.0, 3.0]), rtol=1e-5)
        return np.stack(rows)

    first = draws(7)
    np.testing.assert_allclose(first.sum(axis=1), np.ones(3), rtol=1e-5)
    assert np.all(first > 0)
    assert not np.allclose(first[0], first[1])  # a new draw each step
    np.testing.assert_array_equal(first, draws(7))
    assert not np.allclose(first, draws(8))
    # Evaluation uses the expected weights 1/T and draws nothing.
    weighting = make("rlw", num_tasks=3, seed=7)
    assert call(weighting, [1.0, 2.0, 3.0], training=False) == pytest.approx(2.0)


def test_gls_is_the_geometric_mean_with_its_gradient():
    weighting = make("gls", num_tasks=3)
    losses = np.array([0.5, 2.0, 4.0])
    total, grad = loss_and_grad(weighting, losses, [1, 1, 1])
    geometric_mean = (0.5 * 2.0 * 4.0) ** (1 / 3)
    assert total == pytest.approx(geometric_mean, rel=1e-5)
    np.testing.assert_allclose(grad, geometric_mean / (3 * losses), rtol=1e-5)
    np.testing.assert_allclose(weights_of(weighting), grad, rtol=1e-5)


def test_log_losses_sums_log_losses():
    weighting = make("log_losses")
    total, grad = loss_and_grad(weighting, [0.5, 4.0], [1, 1])
    assert total == pytest.approx(math.log(0.5) + math.log(4.0), rel=1e-5)
    np.testing.assert_allclose(grad, [2.0, 0.25], rtol=1e-5)
    np.testing.assert_allclose(weights_of(weighting), [2.0, 0.25], rtol=1e-5)


def test_stch_warmup_nadir_and_smooth_max():
    weighting = make("stch", num_tasks=2, warmup_epochs=1, steps_per_epoch=2, mu=0.5)
    # Epoch 0: log-loss warm-up; epoch 1: the same while averaging the nadir point.
    for losses in ([5.0, 5.0], [5.0, 5.0], [1.0, 4.0], [3.0, 2.0]):
        total = call(weighting, losses)
        assert total == pytest.approx(math.log(losses[0]) + math.log(losses[1]), rel=1e-5)
    nadir = np.array([2.0, 3.0])
    np.testing.assert_allclose(ops.convert_to_numpy(weighting.nadir()), nadir, rtol=1e-6)
    losses = np.array([1.0, 2.4])
    total, grad = loss_and_grad(weighting, losses, [1, 1])
    scaled = np.log(losses / nadir)
    expected = 2 * 0.5 * np.log(np.sum(np.exp(scaled / 0.5)))
    assert total == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(grad, 2 * softmax(scaled / 0.5) / losses, rtol=1e-4)
    np.testing.assert_allclose(weights_of(weighting), grad, rtol=1e-4)


def test_stch_approaches_the_max_as_mu_goes_to_zero():
    scaled = np.log(np.array([1.0, 3.0, 2.0]))  # nadir 1, so l_t = log L_t
    previous = None
    for mu in (1.0, 0.1, 0.01, 0.001):
        weighting = make("stch", num_tasks=3, warmup_epochs=0, mu=mu)
        call(weighting, [1.0, 1.0, 1.0])  # the nadir epoch: n = (1, 1, 1)
        total = call(weighting, [1.0, 3.0, 2.0]) / 3  # divide out the factor T
        assert total >= scaled.max() - 1e-6
        if previous is not None:
            assert total <= previous + 1e-6
        previous = total
    assert previous == pytest.approx(scaled.max(), abs=1e-3)


def test_famo_logits_move_toward_the_task_that_improves_least():
    weighting = make("famo", num_tasks=3, learning_rate=0.1, weight_decay=0.0)
    call(weighting, [1.0, 1.0, 1.0])  # step 0 stores the losses, no update
    np.testing.assert_allclose(ops.convert_to_numpy(weighting.logits), np.zeros(3))
    total = call(weighting, [0.5, 0.8, 1.0])  # task 2 did not improve
    # Hand computation: z = 1/3, delta = log(1 / L), d = z (delta - mean delta); the first
    # Adam step moves every logit with a nonzero gradient by lr * sign(d).
    delta = -np.log([0.5, 0.8, 1.0])
    d = (delta - delta.mean()) / 3
    np.testing.assert_allclose(ops.convert_to_numpy(weighting.logits), -0.1 * np.sign(d), rtol=1e-4)
    logits = ops.convert_to_numpy(weighting.logits)
    assert logits[0] < 0.0 < logits[1] <= logits[2]  # task 0 fell most: its logit goes down
    z = softmax(logits)
    losses = np.array([0.5, 0.8, 1.0])
    c = np.sum(z / losses)
    assert total == pytest.approx(np.sum(z * np.log(losses)) / c, rel=1e-5)
    np.testing.assert_allclose(weights_of(weighting), z / (c * losses), rtol=1e-5)
    assert weights_of(weighting).sum() == pytest.approx(1.0, rel=1e-5)


def test_famo_weight_decay_and_reference_adam():
    """Two steps against a NumPy port of `torch.optim.Adam(weight_decay=gamma)`."""
    lr, gamma = 0.05, 0.1
    weighting = make("famo", num_tasks=2, learning_rate=lr, weight_decay=gamma)
    w, m, v = np.zeros(2), np.zeros(2), np.zeros(2)
    previous = None
    for step, losses in enumerate(([1.0, 2.0], [0.9, 1.0], [0.3, 0.9])):
        call(weighting, losses)
        if previous is not None:
            z = softmax(w)
            delta = np.log(previous) - np.log(losses)
            grad = z * (delta - np.dot(z, delta)) + gamma * w
            m = 0.9 * m + 0.1 * grad
            v = 0.999 * v + 0.001 * grad**2
            w = w - lr * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
        previous = np.array(losses)
        np.testing.assert_allclose(ops.convert_to_numpy(weighting.logits), w, rtol=1e-4, atol=1e-6)


def test_uncertainty_matches_the_hand_computation():
    tasks = [Classification("cls", 2), Segmentation("seg", 3)]
    weighting = weighting_lib.get("uncertainty", forms={"seg": "regression"},
                                  initial_log_variance=0.0)
    weighting.set_tasks(tasks)
    s = np.array([0.3, -0.7], "float32")
    weighting.log_variance.assign(s)
    losses = np.array([1.5, 0.4], "float32")
    c = np.array([1.0, 0.5])
    with tf.GradientTape() as tape:
        total = weighting(losses, np.ones(2, "float32"), training=True)
    grad = tape.gradient(total, weighting.log_variance).numpy()
    assert float(total) == pytest.approx(np.sum(c * np.exp(-s) * losses + s / 2), rel=1e-5)
    np.testing.assert_allclose(grad, -c * np.exp(-s) * losses + 0.5, rtol=1e-5)
    np.testing.assert_allclose(weights_of(weighting), c * np.exp(-s), rtol=1e-5)
    # A missing task: no term at all, so zero gradient on its log-variance.
    with tf.GradientTape() as tape:
        total = weighting(losses, np.array([1.0, 0.0], "float32"), training=True)
    grad = tape.gradient(total, weighting.log_variance).numpy()
    assert float(total) == pytest.approx(np.exp(-0.3) * 1.5 + 0.15, rel=1e-5)
    assert grad[1] == 0.0


# --- missing tasks, zero losses ---------------------------------------------------------------
@pytest.mark.parametrize("name", LOSS_METHODS)
def test_missing_task_gets_no_gradient_and_keeps_its_statistics(name):
    weighting = make(name, num_tasks=3)
    for losses in ([1.0, 2.0, 3.0], [0.8, 1.5, 2.5], [0.7, 1.4, 2.0]):  # past every warm-up
        call(weighting, losses)
    before = state_of(weighting)
    logged_before = weights_of(weighting)
    total, grad = loss_and_grad(weighting, [0.5, 0.0, 1.5], [1, 0, 1])
    after = state_of(weighting)
    assert math.isfinite(total)
    assert np.all(np.isfinite(grad)) and grad[1] == 0.0
    assert grad[0] != 0.0 and grad[2] != 0.0
    for path, value in before.items():
        if value.ndim == 1:  # per-task statistics: the missing task's entry is untouched
            assert after[path][1] == value[1], path
    if name != "rlw" and name != "dwa":  # these log weights that do not depend on the batch
        assert weights_of(weighting)[1] == logged_before[1]
    assert np.all(np.isfinite(weights_of(weighting)))


@pytest.mark.parametrize("name", LOSS_METHODS)
def test_zero_losses_empty_batches_and_evaluation(name):
    weighting = make(name, num_tasks=2)
    for losses, present in (([0.0, 0.0], [1, 1]), ([0.0, 1.0], [1, 1]), ([0.0, 0.0], [0, 0]),
                            ([1.0, 0.0], [1, 1]), ([0.0, 0.0], [0, 0])):
        total, grad = loss_and_grad(weighting, losses, present)
        assert math.isfinite(total), (losses, present)
        assert np.all(np.isfinite(grad)), (losses, present)
        assert np.all(grad[np.array(present) == 0] == 0.0)
        for value in state_of(weighting).values():
            assert np.all(np.isfinite(value))
        assert np.all(np.isfinite(weights_of(weighting)))
    total, grad = loss_and_grad(weighting, [0.0, 0.0], [0, 0])
    assert total == 0.0

    # Evaluation (`training=False`) updates nothing.
    before = {v.path: ops.convert_to_numpy(v) for v in weighting.variables}
    assert math.isfinite(call(weighting, [0.5, 1.0], training=False))
    for v in weighting.variables:
        np.testing.assert_array_equal(ops.convert_to_numpy(v), before[v.path])


# --- XLA ----------------------------------------------------------------------------------------
STEPS = [  # (losses, present): a missing task, a zero loss, an empty batch
    ([1.0, 2.0, 3.0], [1, 1, 1]), ([0.8, 0.0, 2.5], [1, 0, 1]), ([0.7, 1.4, 0.0], [1, 1, 1]),
    ([0.0, 0.0, 0.0], [0, 0, 0]), ([0.6, 1.2, 2.0], [1, 1, 1]), ([0.5, 1.3, 1.9], [1, 1, 0]),
]


@pytest.mark.parametrize("name", LOSS_METHODS)
def test_compiled_steps_match_eager_steps(name):
    """The weighting alone under `jit_compile=True` (fast; the fits below compile a model).

    RLW included: its draws (`portable_random`) are the same with and without XLA.
    """

    def compiled_run():
        compiled = make(name, num_tasks=3, seed=3) if name == "rlw" else make(name, num_tasks=3)

        @tf.function(jit_compile=True)
        def step(losses, present):
            with tf.GradientTape() as tape:
                tape.watch(losses)
                total = compiled(losses, present, training=True)
            return total, tape.gradient(total, losses)

        for losses, present in STEPS:
            total, grad = step(tf.constant(losses, "float32"), tf.constant(present, "float32"))
            yield float(total), grad.numpy(), weights_of(compiled)

    eager = make(name, num_tasks=3, seed=3) if name == "rlw" else make(name, num_tasks=3)
    for (losses, present), (total, grad, weights), again in zip(STEPS, compiled_run(), compiled_run()):
        assert np.isfinite(total) and np.all(np.isfinite(grad)) and np.all(np.isfinite(weights))
        np.testing.assert_array_equal(grad, again[1])  # deterministic, RLW included
        if name == "rlw":
            np.testing.assert_allclose(grad, weights * np.array(present), rtol=1e-6)
            np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-5)
        expected_total, expected_grad = loss_and_grad(eager, losses, present)
        np.testing.assert_allclose(total, expected_total, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(weights, weights_of(eager), rtol=1e-5, atol=1e-6)


def fit_one_epoch(name, trunk):
    model = keras_mtl.build_mtl(
        [Classification("label", 3), Segmentation("mask", 4)], trunk=trunk, weights=None,
        input_shape=(32, 32, 3), weighting=weighting_lib.get(name, **FAST.get(name, {})),
    )
    # SGD: Adam's slot updates double the XLA compile time and are not what is tested.
    model.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=True)
    data = keras_mtl.data.shapes.make_dataset(16, image_size=32, batch_size=8, tasks=["label", "mask"])
    history = model.fit(data, epochs=1, verbose=0).history
    assert math.isfinite(history["loss"][-1])
    for task in ("label", "mask"):
        assert f"weight/{task}" in history
        assert math.isfinite(history[f"weight/{task}"][-1])


def test_one_epoch_fit_with_xla(conv_trunk):
    """One model fit in the default run (FAMO: the most state); all of them under `-m slow`."""
    fit_one_epoch("famo", conv_trunk())


@pytest.mark.slow
@pytest.mark.parametrize("name", LOSS_METHODS)
def test_one_epoch_fit_with_xla_every_method(name, conv_trunk):
    fit_one_epoch(name, conv_trunk())
