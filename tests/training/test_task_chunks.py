"""A memory budget for the per-task gradients (issue 20): the Gramian a chunk of tasks at a
time equals the unchunked one, in the Gram matrix and in the train step."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers, ops

import keras_mtl
from keras_mtl import weighting as weighting_lib
from keras_mtl.tasks import Classification
from keras_mtl.training import gramian as gramian_lib
from keras_mtl.training import task_chunks

NUM_TASKS = 5


def test_chunk_size_from_the_arguments():
    assert task_chunks.chunk_size(64, 1000, task_chunk_size=8) == 8
    assert task_chunks.chunk_size(4, 1000, task_chunk_size=8) == 4  # clipped to T
    assert task_chunks.chunk_size(64, 2**20, jacobian_budget_mib=40) == 9  # 10 rows - 1
    assert task_chunks.chunk_size(8, 2**20, jacobian_budget_mib=40) == 8  # all 8 fit
    assert task_chunks.chunk_size(64, 2**30, jacobian_budget_mib=1) == 1
    assert task_chunks.chunk_size(64, 1000) == 64  # the automatic budget holds them all
    assert task_chunks.chunk_size(64, None) == 64  # a dynamic size: no automatic chunking
    with pytest.raises(ValueError, match="task_chunk_size"):
        task_chunks.chunk_size(64, None, jacobian_budget_mib=10)


def test_the_arguments_are_checked_and_saved():
    weighting = weighting_lib.get("mgda", task_chunk_size=4, jacobian_budget_mib=64)
    config = weighting.get_config()
    assert config["task_chunk_size"] == 4 and config["jacobian_budget_mib"] == 64
    restored = weighting_lib.WEIGHTINGS.lookup("mgda").from_config(config)
    assert restored.task_chunk_size == 4 and restored.jacobian_budget_mib == 64
    assert "task_chunk_size" not in weighting_lib.get("mgda").get_config()
    with pytest.raises(ValueError, match="task_chunk_size"):
        weighting_lib.get("upgrad", task_chunk_size=0)
    with pytest.raises(ValueError, match="jacobian_budget_mib"):
        weighting_lib.get("upgrad", jacobian_budget_mib=0)


def _trunk_and_objectives():
    """A two-layer net and T objectives (task 1 absent); returns a function of the tape."""
    keras.utils.set_random_seed(0)
    net = keras.Sequential([layers.Dense(6, activation="tanh"), layers.Dense(NUM_TASKS)])
    x = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")  # (B, 3)
    net(x)

    def objectives():
        out = net(x)  # (B, T)
        return [None if t == 1 else ops.mean(out[:, t] ** 2) for t in range(NUM_TASKS)]

    return net, objectives


@pytest.mark.parametrize("jit_compile", [None, False, True])  # None: eager
def test_chunked_gramian_equals_the_gramian(jit_compile):
    net, objectives = _trunk_and_objectives()
    sources = net.trainable_variables

    def grams():
        with tf.GradientTape(persistent=True) as tape:
            objs = objectives()
        full = gramian_lib.gramian(gramian_lib.per_task_gradients(tape, objs, sources))  # (T, T)
        return [full] + [task_chunks.chunked_gramian(tape, objs, sources, chunk)
                         for chunk in (1, 2, 3)]

    if jit_compile is not None:
        grams = tf.function(grams, jit_compile=jit_compile)
    full, *chunked = [ops.convert_to_numpy(g) for g in grams()]
    assert np.all(full[1] == 0) and np.all(full[:, 1] == 0) and full[0, 0] > 0
    for gram in chunked:
        np.testing.assert_allclose(gram, full, rtol=1e-5, atol=1e-7)


# --- the step -------------------------------------------------------------------------------
def tiny_model(weighting):
    images = keras.Input((32, 32, 3))
    x = layers.Rescaling(1 / 255.0)(images)
    p2 = layers.Conv2D(3, 3, strides=8, padding="same")(x)  # (B, 4, 4, 3)
    p3 = layers.AveragePooling2D(2)(p2)  # (B, 2, 2, 3)
    p4 = layers.Conv2D(4, 1)(p3)  # (B, 2, 2, 4)
    p5 = layers.AveragePooling2D(2)(p4)  # (B, 1, 1, 4)
    trunk = keras.Model(images, {"P2": p2, "P3": p3, "P4": p4, "P5": p5}, name="micro_trunk")
    tasks = [Classification(f"t{i}", 2) for i in range(NUM_TASKS)]
    return keras_mtl.MultiTaskModel(trunk, tasks, weighting=weighting)


def train(weighting, jit_compile=False, steps=2):
    keras.utils.set_random_seed(0)
    model = tiny_model(weighting)
    model.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 32, 32, 3)).astype("uint8")
    targets = {f"t{i}": rng.integers(0, 2, 6).astype("int32") for i in range(NUM_TASKS)}
    targets["t2"][:] = -1  # no labels for task 2 in the batch: masked
    history = model.fit(images, targets, batch_size=6, epochs=steps, verbose=0).history
    return model, history


def assert_same_models(a, b):
    for va, vb in zip(a.trainable_variables + a.weighting.variables,
                      b.trainable_variables + b.weighting.variables):
        np.testing.assert_allclose(ops.convert_to_numpy(va), ops.convert_to_numpy(vb),
                                   rtol=1e-5, atol=1e-6, err_msg=va.path)


@pytest.mark.parametrize("name, kwargs, jit_compile", [
    ("mgda", {}, False),
    pytest.param("mgda", {"rep_grad": True}, True, marks=pytest.mark.slow),  # XLA: ~1 min
    pytest.param("upgrad", {}, True, marks=pytest.mark.slow),
    ("imtl", {"rep_grad": True}, False),
    ("mgda", {"update_every": 2}, False),
])
def test_chunked_step_equals_the_unchunked_step(name, kwargs, jit_compile, monkeypatch):
    whole, whole_history = train(weighting_lib.get(name, **kwargs), jit_compile)
    traced = []  # the chunked Gramian's calls while the step is traced
    original = task_chunks.chunked_gramian
    monkeypatch.setattr(task_chunks, "chunked_gramian",
                        lambda *args, **kw: traced.append(args[3]) or original(*args, **kw))
    chunked, chunked_history = train(weighting_lib.get(name, task_chunk_size=2, **kwargs),
                                     jit_compile)
    assert traced and set(traced) == {2}
    assert_same_models(whole, chunked)
    np.testing.assert_allclose(chunked_history["loss"], whole_history["loss"], rtol=1e-5)


def test_a_tiny_budget_chunks_the_aggregate_path_too():
    """GradDrop needs the (T, D) matrix: the budget only orders its backward passes."""
    whole, _ = train(weighting_lib.get("graddrop", seed=0, rep_grad=False))
    chunked, _ = train(weighting_lib.get("graddrop", seed=0, rep_grad=False,
                                        jacobian_budget_mib=1e-4))
    assert_same_models(whole, chunked)


@pytest.mark.slow
def test_mixed_precision_chunked_step_gives_the_float32_update():
    """MGDA at the shared features, a chunk of 2: loss-scaled per-task gradients."""
    updates = []
    for policy in ("float32", "mixed_float16"):
        keras.config.set_dtype_policy(policy)
        try:
            model = train(weighting_lib.get("mgda", rep_grad=True, task_chunk_size=2),
                          steps=0)[0]
            before = [ops.convert_to_numpy(v).copy() for v in model.trainable_variables]
            after = train(weighting_lib.get("mgda", rep_grad=True, task_chunk_size=2),
                          steps=1)[0]
            updates.append([b - ops.convert_to_numpy(v)
                            for b, v in zip(before, after.trainable_variables)])
        finally:
            keras.config.set_dtype_policy("float32")
    for full, mixed in zip(*updates):
        # float16 activations: ~1e-3 relative; a loss-scale slip would be 2^15x off.
        np.testing.assert_allclose(mixed, full, rtol=5e-2, atol=3e-2 * np.abs(full).max() + 1e-7)
