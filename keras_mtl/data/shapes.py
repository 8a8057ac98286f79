"""Synthetic multi-task "shapes" data set, made on the fly with `tf.data`.

Each image shows 1 to `MAX_SHAPES` bright circles, squares and triangles on a
dark noisy background, one shape per cell of a 2x2 grid (so shapes never
overlap). Every image carries three targets, keyed as in `TASK_NAMES`:
the class of the largest shape (classification), a box and label per shape
(detection, "xyxy" pixels) and a per-pixel class map (segmentation).
Everything is pure TensorFlow, seeded by `(seed, index)`: the same pair always
gives the same example. Use different seeds for different splits, e.g.
`seed=0` for training and `seed=1` for validation.
"""

import tensorflow as tf

CLASS_NAMES = ("circle", "square", "triangle")
NUM_CLASSES = 3  # object classes 0..2 (classification and detection labels)
NUM_SEGMENTATION_CLASSES = 4  # 0 = background, 1 + object class
MAX_SHAPES = 4
TASK_NAMES = {"classification": "label", "detection": "objects", "segmentation": "mask"}

_MIN_IMAGE_SIZE = 16
_NOISE_STDDEV = 8.0


def make_example(index, image_size=64, seed=0):
    """Makes one synthetic example; pure TensorFlow, usable in `Dataset.map`.

    Args:
        index: int or scalar integer tensor, the example's index.
        image_size: python int `S` >= 16, the image height and width.
        seed: int or scalar integer tensor; with `index` it fixes the example.

    Returns:
        `(image, targets)`: `image` is a `(S, S, 3)` uint8 tensor; `targets`
        is a dict with `"label"` (scalar int32, class of the largest shape),
        `"objects"` (`{"boxes": (MAX_SHAPES, 4) float32 xyxy pixels,
        "labels": (MAX_SHAPES,) int32}`, padded at the end with zero boxes
        and label -1) and `"mask"` (`(S, S)` int32, 0 = background,
        1 + class elsewhere).

    Raises:
        ValueError: if `image_size` is smaller than 16.

    Example:

    >>> image, targets = make_example(0, image_size=32)
    >>> image.shape, targets["mask"].shape
    (TensorShape([32, 32, 3]), TensorShape([32, 32]))
    """
    if image_size < _MIN_IMAGE_SIZE:
        raise ValueError(f"`image_size` must be >= {_MIN_IMAGE_SIZE}, got {image_size}.")
    size = float(image_size)
    base = tf.stack([tf.cast(seed, tf.int64), tf.cast(index, tf.int64)])
    seeds = tf.unstack(tf.random.experimental.stateless_split(base, num=9))

    # Shape count, classes, and a distinct grid cell per shape.
    num_shapes = tf.random.stateless_uniform(
        [], seeds[0], minval=1, maxval=MAX_SHAPES + 1, dtype=tf.int32)
    valid = tf.range(MAX_SHAPES) < num_shapes  # (4,)
    classes = tf.random.stateless_uniform(
        [MAX_SHAPES], seeds[1], minval=0, maxval=NUM_CLASSES, dtype=tf.int32)
    cells = tf.argsort(tf.random.stateless_uniform([MAX_SHAPES], seeds[2]))  # (4,)
    cell_size = size / 2.0
    cell_x0 = tf.cast(cells % 2, tf.float32) * cell_size  # (4,)
    cell_y0 = tf.cast(cells // 2, tf.float32) * cell_size  # (4,)

    # Half-sizes; the largest one stays, the others shrink to <= 0.8 of it.
    radius = tf.random.stateless_uniform(
        [MAX_SHAPES], seeds[3], minval=0.10 * size, maxval=0.22 * size)
    radius = tf.minimum(radius, cell_size / 2.0)  # (4,)
    largest = tf.argmax(tf.where(valid, radius, -1.0), output_type=tf.int32)
    is_largest = tf.range(MAX_SHAPES) == largest
    radius = tf.where(is_largest, radius, tf.minimum(radius, 0.8 * radius[largest]))

    # Centres jittered so the whole shape stays inside its cell.
    jitter = tf.random.stateless_uniform([2, MAX_SHAPES], seeds[4])  # (2, 4)
    cx = cell_x0 + radius + jitter[0] * (cell_size - 2.0 * radius)  # (4,)
    cy = cell_y0 + radius + jitter[1] * (cell_size - 2.0 * radius)  # (4,)

    # Rasterise with pixel centres at (x + 0.5, y + 0.5).
    coords = tf.range(image_size, dtype=tf.float32) + 0.5  # (S,)
    dx = coords[None, None, :] - cx[:, None, None]  # (4, 1, S)
    dy = coords[None, :, None] - cy[:, None, None]  # (4, S, 1)
    r = radius[:, None, None]  # (4, 1, 1)
    circle = dx**2 + dy**2 <= r**2  # (4, S, S)
    square = (tf.abs(dx) <= r) & (tf.abs(dy) <= r)  # (4, S, S)
    triangle = (dy <= r) & (tf.abs(dx) <= (dy + r) / 2.0)  # (4, S, S)
    kind = classes[:, None, None]  # (4, 1, 1)
    shape_masks = tf.where(kind == 0, circle, tf.where(kind == 1, square, triangle))
    shape_masks &= valid[:, None, None]  # (4, S, S)

    mask = tf.reduce_sum(
        tf.cast(shape_masks, tf.int32) * (kind + 1), axis=0)  # (S, S)

    # Tight boxes of the rasterised pixels: [first, last + 1).
    cols = tf.reduce_any(shape_masks, axis=1)  # (4, S) columns hit
    rows = tf.reduce_any(shape_masks, axis=2)  # (4, S) rows hit

    def _span(hits):  # (4, S) -> (4,), (4,)
        first = tf.argmax(tf.cast(hits, tf.int32), axis=1, output_type=tf.int32)
        last = image_size - tf.argmax(
            tf.cast(hits[:, ::-1], tf.int32), axis=1, output_type=tf.int32)
        return first, last

    x_min, x_max = _span(cols)
    y_min, y_max = _span(rows)
    boxes = tf.cast(tf.stack([x_min, y_min, x_max, y_max], axis=1), tf.float32)  # (4, 4)
    boxes = tf.where(valid[:, None], boxes, 0.0)
    labels = tf.where(valid, classes, -1)  # (4,)

    # Dark noisy background, bright saturated shapes.
    background = tf.random.stateless_uniform([3], seeds[5], minval=0.0, maxval=70.0)
    hsv = tf.stack([
        tf.random.stateless_uniform([MAX_SHAPES], seeds[6]),
        tf.random.stateless_uniform([MAX_SHAPES], seeds[7], minval=0.6, maxval=1.0),
        tf.fill([MAX_SHAPES], 0.9),
    ], axis=1)  # (4, 3)
    colours = tf.image.hsv_to_rgb(hsv) * 255.0  # (4, 3)
    shape_float = tf.cast(shape_masks, tf.float32)[..., None]  # (4, S, S, 1)
    foreground = tf.reduce_sum(shape_float * colours[:, None, None, :], axis=0)  # (S, S, 3)
    covered = tf.reduce_max(shape_float, axis=0)  # (S, S, 1)
    image = covered * foreground + (1.0 - covered) * background  # (S, S, 3)
    image += tf.random.stateless_normal(
        [image_size, image_size, 3], seeds[8], stddev=_NOISE_STDDEV)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)

    targets = {
        TASK_NAMES["classification"]: classes[largest],
        TASK_NAMES["detection"]: {"boxes": boxes, "labels": labels},
        TASK_NAMES["segmentation"]: mask,
    }
    return image, targets


def make_tasks(with_detection=True, segmentation_kwargs=None):
    """The `keras_mtl.tasks` of this data set, named as in `TASK_NAMES`.

    Args:
        with_detection: include the `Detection` task (boxes of every shape).
        segmentation_kwargs: optional arguments of the mask task
            (`keras_mtl.tasks.Segmentation`, e.g. `head_convs`).

    Returns:
        `[Classification("label", 3), Detection("objects", 3),
        Segmentation("mask", 4)]`, without the `Detection` if not wanted.

    Example:

    >>> model = keras_mtl.build_mtl(make_tasks(), trunk="micro_resnet", weights=None,
    ...                             input_shape=(32, 32, 3))
    >>> model.task_names
    ['label', 'objects', 'mask']
    """
    from keras_mtl import tasks

    names = TASK_NAMES
    chosen = [tasks.Classification(names["classification"], num_classes=NUM_CLASSES)]
    if with_detection:
        chosen.append(tasks.Detection(names["detection"], num_classes=NUM_CLASSES))
    chosen.append(tasks.Segmentation(names["segmentation"], num_classes=NUM_SEGMENTATION_CLASSES,
                                     **(segmentation_kwargs or {})))
    return chosen


def make_dataset(num_examples, image_size=64, batch_size=32, seed=0, shuffle=False,
                 repeat=False, drop_remainder=False, tasks=None, cache=False):
    """Builds a batched `tf.data.Dataset` of synthetic shapes examples.

    Example `i` is `make_example(i, image_size, seed)`, so a data set is
    reproducible; use different seeds for different splits (e.g. `seed=0` for
    training and `seed=1` for validation).

    Args:
        num_examples: number of distinct examples (indices `0..num_examples-1`).
        image_size: python int, image height and width in pixels.
        batch_size: examples per batch.
        seed: data seed; also seeds the shuffle order.
        shuffle: whether to shuffle the examples (buffer `min(num_examples, 1024)`,
            reshuffled each epoch).
        repeat: whether to repeat the data set forever.
        drop_remainder: whether to drop the last, smaller batch.
        tasks: optional list of target keys to keep, a subset of
            `TASK_NAMES.values()` (`"label"`, `"objects"`, `"mask"`); default all.
        cache: keep the generated examples in memory after the first pass
            (saves CPU when the same examples are seen for several epochs).

    Returns:
        A `tf.data.Dataset` of `(images, targets)`: images `(B, S, S, 3)`
        uint8; targets a dict with `"label"` `(B,)`, `"objects"`
        `{"boxes": (B, 4, 4), "labels": (B, 4)}` and `"mask"` `(B, S, S)`.

    Raises:
        ValueError: if a name in `tasks` is unknown.

    Example:

    >>> ds = make_dataset(8, image_size=32, batch_size=4, tasks=["label", "mask"])
    >>> images, targets = next(iter(ds))
    >>> images.shape, sorted(targets)
    (TensorShape([4, 32, 32, 3]), ['label', 'mask'])
    """
    valid_names = list(TASK_NAMES.values())
    keep = valid_names if tasks is None else list(tasks)
    unknown = [name for name in keep if name not in valid_names]
    if unknown:
        raise ValueError(f"Unknown task name(s) {unknown}; valid names are {valid_names}.")

    def _example(index):
        image, targets = make_example(index, image_size=image_size, seed=seed)
        return image, {name: targets[name] for name in keep}

    ds = tf.data.Dataset.range(num_examples)
    shuffle_buffer = min(num_examples, 1024)
    if shuffle and not cache:  # Shuffling indices before `map` is equivalent and cheaper.
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:  # Shuffle after the cache, or every epoch replays the first order.
        ds = ds.cache()
        if shuffle:
            ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)


def leaderboard_factory(image_size=64, batch_size=16, train_examples=512, val_examples=128,
                        with_detection=True, segmentation_kwargs=None):
    """A data factory of synthetic shapes for `keras_mtl.evaluation.run_leaderboard`.

    Seed `s` draws its own training examples (data seed `s`, shuffled with
    `s`); every seed validates on the same `val_examples` (data seed 10000).

    Args:
        image_size, batch_size: of every batch.
        train_examples, val_examples: the number of distinct examples.
        with_detection: include the `Detection` task.
        segmentation_kwargs: optional arguments of the mask task
            (`keras_mtl.tasks.Segmentation`, e.g. `head_convs`).

    Returns:
        `factory(seed) -> LeaderboardData`.

    Example:

    >>> data = leaderboard_factory(image_size=32, batch_size=4)(0)
    >>> [task.name for task in data.tasks], data.input_shape
    (['label', 'objects', 'mask'], (32, 32, 3))
    """
    from keras_mtl.evaluation.leaderboard import LeaderboardData

    def factory(seed):
        tasks = make_tasks(with_detection=with_detection, segmentation_kwargs=segmentation_kwargs)
        names = [task.name for task in tasks]
        train = make_dataset(train_examples, image_size=image_size, batch_size=batch_size,
                             seed=seed, shuffle=True, repeat=True, drop_remainder=True,
                             tasks=names, cache=True)
        validation = make_dataset(val_examples, image_size=image_size, batch_size=batch_size,
                                  seed=10000, tasks=names, cache=True)
        return LeaderboardData(tasks=tasks, train=train, validation=validation,
                               input_shape=(image_size, image_size, 3),
                               name=f"shapes-{image_size}px-b{batch_size}-n{train_examples}")

    return factory
