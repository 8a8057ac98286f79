"""Helpers for the tests of single weightings (hand-made gradients, no models).

Test files take them through the `helpers` fixture (`--import-mode=importlib`
puts no test folder on the import path)."""

import sys

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import keras_mtl
from keras_mtl import weighting as weighting_lib
from keras_mtl.tasks import Classification


def make(name, num_tasks=2, **kwargs):
    """A registered weighting built for `num_tasks` classification tasks t0, t1, ..."""
    weighting = weighting_lib.get(name, **kwargs)
    weighting.set_tasks([Classification(f"t{i}", 2) for i in range(num_tasks)])
    return weighting


def aggregate(weighting, grads, losses=None, present=None, graph=False):
    """`weighting.aggregate` on NumPy inputs (losses and presence default to ones).

    `graph=True` runs it as a `tf.function` (solvers with `fori_loop`s are
    slow when eager)."""
    grads = np.asarray(grads, "float32")
    losses = np.ones(len(grads), "float32") if losses is None else np.asarray(losses, "float32")
    present = np.ones(len(grads), "float32") if present is None else np.asarray(present, "float32")
    step = tf.function(weighting.aggregate) if graph else weighting.aggregate
    return ops.convert_to_numpy(step(grads, losses, present))


def weights_of(weighting):
    return ops.convert_to_numpy(weighting.current_weights())


def step(weighting, grads, present=None):
    """One `aggregate` with unit losses: `(direction, the weights it logged)`."""
    return aggregate(weighting, grads, present=present), weights_of(weighting)


def fit_two_classifiers(trunk, weighting):
    """One epoch of SGD (2 steps of 4 random 32 px images) on two classification
    tasks `a` (3 classes) and `b` (2) over `trunk`: `(model, its last loss)`."""
    model = keras_mtl.build_mtl([Classification("a", 3), Classification("b", 2)],
                                trunk=trunk, weights=None, input_shape=(32, 32, 3),
                                weighting=weighting)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (8, 32, 32, 3)).astype("uint8")  # (8, 32, 32, 3)
    targets = {"a": rng.integers(0, 3, 8).astype("int32"), "b": rng.integers(0, 2, 8).astype("int32")}
    model.compile(optimizer="sgd", jit_compile=False)
    history = model.fit(images, targets, batch_size=4, epochs=1, verbose=0).history
    return model, history["loss"][-1]


def state_of(weighting):
    """Every variable of the weighting, by path, as NumPy."""
    return {v.path: ops.convert_to_numpy(v).copy() for v in weighting.variables}


def assert_compiled_steps_match_eager(name, steps, num_tasks, graph=False, rtol=1e-4, **kwargs):
    """A few `aggregate` steps under `jit_compile=True` equal the same steps without XLA.

    `steps` is a list of `(grads, losses, present)`; the weighting's state
    carries over from step to step in both runs. The reference runs
    eagerly, or as a plain `tf.function` with `graph=True`; `rtol` for
    methods whose iterations amplify rounding.
    """
    eager, compiled = make(name, num_tasks, **kwargs), make(name, num_tasks, **kwargs)
    dim = np.asarray(steps[0][0]).shape[1]
    for weighting in (eager, compiled):
        weighting.build_gradient_state(dim)  # D-sized state exists before tracing
    step = tf.function(compiled.aggregate, jit_compile=True)
    reference = tf.function(eager.aggregate) if graph else eager.aggregate
    for grads, losses, present in steps:
        args = [tf.constant(np.asarray(x, "float32")) for x in (grads, losses, present)]
        expected = ops.convert_to_numpy(reference(*args))
        got = ops.convert_to_numpy(step(*args))
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=1e-5)
        np.testing.assert_allclose(weights_of(compiled), weights_of(eager), rtol=rtol, atol=1e-5)


def assert_state_round_trips(name, first_steps, next_step, num_tasks, **kwargs):
    """State saved after `first_steps`, loaded into a fresh weighting: the same next step."""
    original = make(name, num_tasks, **kwargs)
    dim = np.asarray(first_steps[0][0]).shape[1]
    original.build_gradient_state(dim)
    for grads, losses, present in first_steps:
        aggregate(original, grads, losses, present)
    store = {}
    original.save_own_variables(store)
    restored = make(name, num_tasks, **kwargs)
    restored.build_gradient_state(dim)
    restored.load_own_variables(store)
    restored_state = state_of(restored)
    for path, value in state_of(original).items():
        np.testing.assert_array_equal(
            restored_state[path.replace(original.name, restored.name)], value)
    np.testing.assert_allclose(aggregate(restored, *next_step), aggregate(original, *next_step),
                               rtol=1e-6)


@pytest.fixture
def helpers():
    """This module: `helpers.make(...)`, `helpers.aggregate(...)`, ..."""
    return sys.modules[__name__]
