"""`portable_random`: the same draws with and without XLA, with the right distribution."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mtl.weighting import portable_random


def _draws(fn, jit_compile, steps=3, shape=(4, 5)):
    generator = keras.random.SeedGenerator(7)
    step = tf.function(lambda: fn(generator, shape), jit_compile=jit_compile)
    return np.stack([step().numpy() for _ in range(steps)])


@pytest.mark.parametrize("fn", [portable_random.uniform, portable_random.normal])
def test_same_draws_with_and_without_xla(fn):
    plain, compiled = _draws(fn, False), _draws(fn, True)
    assert plain.shape == (3, 4, 5) and plain.dtype == np.float32
    np.testing.assert_allclose(compiled, plain, rtol=0, atol=1e-6)  # uniform: bit-exact
    assert not np.allclose(plain[0], plain[1])  # the generator advances every call
    again = _draws(fn, False)
    np.testing.assert_array_equal(again, plain)  # reproducible for a seed


def test_uniform_is_exact_across_xla_and_in_range():
    np.testing.assert_array_equal(_draws(portable_random.uniform, True),
                                  _draws(portable_random.uniform, False))
    values = portable_random.uniform(keras.random.SeedGenerator(1), (100_000,)).numpy()
    assert values.min() >= 0.0 and values.max() < 1.0
    counts = np.histogram(values, bins=10, range=(0, 1))[0]
    assert np.all(np.abs(counts - 10_000) < 500), counts  # ~5 sigma of a fair bin


def test_normal_moments():
    values = portable_random.normal(keras.random.SeedGenerator(2), (100_000,)).numpy()
    assert np.all(np.isfinite(values))
    assert abs(values.mean()) < 0.02 and abs(values.std() - 1.0) < 0.02
    assert abs(np.mean(np.abs(values) > 1.96) - 0.05) < 0.005


def test_different_seeds_give_different_draws():
    a = portable_random.uniform(keras.random.SeedGenerator(1), (8,)).numpy()
    b = portable_random.uniform(keras.random.SeedGenerator(2), (8,)).numpy()
    assert not np.allclose(a, b)
