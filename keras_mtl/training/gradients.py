"""Gradient plumbing shared by the train steps and the gradient measurements."""

import numpy as np
import tensorflow as tf
from keras import ops


def gradients_or_zeros(tape, target, sources, output_gradients=None):
    """`tape.gradient(target, sources)` with zeros (not `None`) for unconnected sources."""
    grads = tape.gradient(target, sources, output_gradients=output_gradients)
    return [
        g if g is not None
        else tf.zeros_like(s) if isinstance(s, tf.Tensor)  # a feature map (dynamic batch size)
        else ops.zeros(s.shape, s.dtype)  # a variable
        for g, s in zip(grads, sources)
    ]


def flatten_rows(tensors):
    """List of tensors -> `(D,)` float32, concatenated in order."""
    return ops.concatenate([ops.reshape(ops.cast(t, "float32"), (-1,)) for t in tensors], axis=0)


def split_like(vector, tensors):
    """Splits a `(D,)` vector into pieces shaped (and typed) like `tensors`."""
    pieces, offset = [], 0
    for tensor in tensors:
        static = tuple(tensor.shape)
        if None in static:  # a feature map with a dynamic batch size
            shape = ops.shape(tensor)
            size = ops.prod(ops.convert_to_tensor(shape))
        else:
            shape, size = static, int(np.prod(static, dtype="int64"))
        piece = vector[offset:offset + size]
        pieces.append(ops.cast(ops.reshape(piece, shape), tensor.dtype))
        offset = offset + size
    return pieces


def add_gradients(a, b):
    """`a + b` where `None` is an absent (unconnected) gradient."""
    if a is None or b is None:
        return b if a is None else a
    return a + ops.cast(b, a.dtype)
