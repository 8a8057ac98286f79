"""Synthetic many-attribute data set: T binary attributes per image, made on the fly.

For benchmarks and recipes with many tasks (face or product attributes,
multi-label inspection). Attribute `k` has a fixed smooth colour pattern
`P_k` (a random `4 x 4 x 3` field, bilinearly upsampled; the same for every
split, from `pattern_seed`); an image adds `+P_k` where its attribute `k` is
1 and `-P_k` where it is 0, plus pixel noise:

    image = 128 + 48 * sum_k (2 a_k - 1) P_k / sqrt(K) + noise,   a_k ~ Bernoulli(1/2).

Every attribute is a binary classification task named `attr_00`,
`attr_01`, ... (`task_names`). Pure TensorFlow, seeded by `(seed, index)`,
like `keras_mtl.data.shapes`.

Example:

>>> ds = make_dataset(8, num_attributes=4, image_size=32, batch_size=4)
>>> images, targets = next(iter(ds))
>>> images.shape, sorted(targets), targets["attr_00"].shape
(TensorShape([4, 32, 32, 3]), ['attr_00', 'attr_01', 'attr_02', 'attr_03'], TensorShape([4]))
"""

import math

import tensorflow as tf

_NOISE_STDDEV = 8.0
_CONTRAST = 48.0


def task_names(num_attributes):
    """`["attr_00", "attr_01", ...]`: one binary task per attribute."""
    return [f"attr_{index:02d}" for index in range(num_attributes)]


def patterns(num_attributes, image_size, pattern_seed=0):
    """`(K, S, S, 3)` float32: the attributes' smooth patterns, unit RMS each."""
    coarse = tf.random.stateless_normal((num_attributes, 4, 4, 3), seed=(pattern_seed, 7919))
    fine = tf.image.resize(coarse, (image_size, image_size), method="bilinear")
    rms = tf.sqrt(tf.reduce_mean(tf.square(fine), axis=(1, 2, 3), keepdims=True))
    return fine / rms


def make_example(index, num_attributes=32, image_size=32, seed=0, pattern_seed=0):
    """One `(image (S, S, 3) uint8, {name: int32 scalar 0/1})` example."""
    index = tf.cast(index, tf.int32)
    attributes = tf.cast(tf.random.stateless_uniform((num_attributes,), seed=(seed, index),
                                                     maxval=2, dtype=tf.int32), tf.float32)
    signs = 2.0 * attributes - 1.0  # (K,)
    field = tf.tensordot(signs, patterns(num_attributes, image_size, pattern_seed), 1)  # (S, S, 3)
    noise = tf.random.stateless_normal((image_size, image_size, 3), seed=(seed + 1, index))
    image = 128.0 + _CONTRAST * field / math.sqrt(num_attributes) + _NOISE_STDDEV * noise
    image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
    labels = tf.cast(attributes, tf.int32)
    return image, {name: labels[k] for k, name in enumerate(task_names(num_attributes))}


def make_tasks(num_attributes=32):
    """`[Classification("attr_00", 2), ...]`: one binary task per attribute.

    Example:

    >>> [task.name for task in make_tasks(3)]
    ['attr_00', 'attr_01', 'attr_02']
    """
    from keras_mtl import tasks

    return [tasks.Classification(name, num_classes=2) for name in task_names(num_attributes)]


def make_dataset(num_examples, num_attributes=32, image_size=32, batch_size=32, seed=0,
                 pattern_seed=0, shuffle=False, repeat=False, drop_remainder=False):
    """A batched `tf.data.Dataset` of `(images (B, S, S, 3) uint8, {name: (B,) int32})`.

    Args:
        num_examples: distinct examples (indices `0..num_examples-1`).
        num_attributes: K, the binary attributes (tasks) per image.
        image_size: image height and width.
        batch_size: examples per batch.
        seed: data seed (use another one for a validation split).
        pattern_seed: seed of the attributes' patterns (keep it across splits).
        shuffle, repeat, drop_remainder: as in `keras_mtl.data.shapes.make_dataset`.
    """
    ds = tf.data.Dataset.range(num_examples)
    if shuffle:
        ds = ds.shuffle(min(num_examples, 1024), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda i: make_example(i, num_attributes, image_size, seed, pattern_seed),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if repeat:
        ds = ds.repeat()
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
