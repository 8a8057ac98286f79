"""The `tf.data` tail shared by the in-memory loaders: select, shuffle, repeat, batch, augment.

Example:

>>> images, masks = np.zeros((6, 8, 8, 3), "uint8"), np.zeros((6, 8, 8), "uint8")
>>> ds = from_arrays(images, {"mask": masks}, batch_size=4, shuffle=True, seed=0)
>>> [tuple(x.shape) for x, _ in ds]
[(4, 8, 8, 3), (2, 8, 8, 3)]
"""

import tensorflow as tf


def select_tasks(available, tasks):
    """The task names to keep: `available` when `tasks` is None, else `tasks` (checked).

    Raises:
        ValueError: a name in `tasks` is not in `available` (the error lists them).
    """
    available = list(available)
    if tasks is None:
        return available
    keep = [tasks] if isinstance(tasks, str) else list(tasks)
    unknown = [name for name in keep if name not in available]
    if unknown:
        raise ValueError(f"Unknown task name(s) {unknown}; this data has {available}.")
    return keep


def from_arrays(images, targets, batch_size=8, shuffle=False, repeat=False, augment=None,
                drop_remainder=False, seed=0, batched=True):
    """A `tf.data.Dataset` of `(images, targets)` over in-memory arrays.

    Args:
        images: `(I, H, W, 3)` uint8 array.
        targets: dict of arrays (or of dicts of arrays) with a leading `I`.
        batch_size: examples per batch.
        shuffle: reshuffle every epoch (buffer: all examples).
        repeat: repeat forever.
        augment: optional callable on each batch, e.g. `JointAugmentation`.
        drop_remainder: drop the last, smaller batch.
        seed: shuffle seed.
        batched: `False` yields single examples (for `mix_datasets`);
            `batch_size`, `drop_remainder` and `augment` are then unused.

    Returns:
        The dataset, prefetched.
    """
    ds = tf.data.Dataset.from_tensor_slices((images, targets))
    return finish(ds, batch_size, shuffle_buffer=len(images) if shuffle else 0, repeat=repeat,
                  augment=augment, drop_remainder=drop_remainder, seed=seed, batched=batched)


def finish(ds, batch_size, shuffle_buffer=0, repeat=False, augment=None, drop_remainder=False,
           seed=0, batched=True):
    """Shuffles (when `shuffle_buffer` > 0), repeats, batches, augments and prefetches
    a dataset of single examples; the arguments are those of `from_arrays`."""
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    if not batched:
        return ds.prefetch(tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if augment is not None:
        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
