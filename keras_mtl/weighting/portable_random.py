"""Random draws that are the same with and without XLA.

TensorFlow's stateless random ops give other numbers once compiled with XLA
than its plain kernels do (same seed, same shape). A weighting that draws
(RLW's weights, PCGrad's and GradVac's task orders, GradDrop's thresholds)
would then train differently with `jit_compile=True` than without, and under
a multi-replica strategy (where `MultiTaskModel` compiles only the
replica-local forward and backward passes, so the weighting runs outside XLA)
differently from one device. Here the random bits come from a counter-based
integer hash (the 32-bit finaliser of MurmurHash3, applied to the element
index mixed with the `keras.random.SeedGenerator` state), which both paths
compute exactly; uniforms are exact and normals (Box-Muller) agree to an ulp.

Example:

>>> generator = keras.random.SeedGenerator(0)
>>> np.round(uniform(generator, (2, 3)), 4)  # in [0, 1), the same under jit_compile=True
array([[0.    , 0.665 , 0.5986],
       [0.6145, 0.2777, 0.9054]], dtype=float32)
"""

import math

import tensorflow as tf

_GOLDEN = 0x9E3779B9  # 2^32 / golden ratio: spreads consecutive indices over 32 bits
_MIX_1 = 0x85EBCA6B  # the multipliers of MurmurHash3's finaliser
_MIX_2 = 0xC2B2AE35


def _finalise(bits):
    """MurmurHash3's 32-bit finaliser on a uint32 tensor (a bijection that mixes every bit)."""
    bits = tf.bitwise.bitwise_xor(bits, tf.bitwise.right_shift(bits, 16))
    bits = bits * tf.constant(_MIX_1, tf.uint32)
    bits = tf.bitwise.bitwise_xor(bits, tf.bitwise.right_shift(bits, 13))
    bits = bits * tf.constant(_MIX_2, tf.uint32)
    return tf.bitwise.bitwise_xor(bits, tf.bitwise.right_shift(bits, 16))


def random_bits(seed_generator, shape):
    """uint32 tensor of `shape` (ints or a shape tensor) of hashed bits.

    Advances `seed_generator` once per call.
    """
    seed = tf.convert_to_tensor(seed_generator.next())  # (2,)
    if seed.dtype != tf.uint32:
        seed = tf.bitcast(tf.cast(seed, tf.int32), tf.uint32)
    shape = tf.cast(shape, tf.int32)  # a tuple of ints or a shape tensor (dynamic sizes)
    index = tf.range(tf.reduce_prod(shape), dtype=tf.int32)  # (N,)
    bits = tf.bitcast(index, tf.uint32) * tf.constant(_GOLDEN, tf.uint32)
    bits = _finalise(tf.bitwise.bitwise_xor(bits, seed[0]))
    bits = _finalise(tf.bitwise.bitwise_xor(bits, seed[1]))
    return tf.reshape(bits, shape)


def uniform(seed_generator, shape):
    """float32 tensor of `shape`, uniform on [0, 1) in steps of 2^-24."""
    bits = tf.bitwise.right_shift(random_bits(seed_generator, shape), 8)  # 24 bits
    return tf.cast(tf.bitcast(bits, tf.int32), tf.float32) * (2.0 ** -24)


def normal(seed_generator, shape):
    """float32 tensor of `shape`, standard normal (Box-Muller on two hashed uniforms)."""
    both = uniform(seed_generator, tf.concat([[2], tf.cast(shape, tf.int32)], axis=0))
    radius_draw = 1.0 - both[0]  # (0, 1]: the log is finite
    return tf.sqrt(-2.0 * tf.math.log(radius_draw)) * tf.cos(2.0 * math.pi * both[1])
