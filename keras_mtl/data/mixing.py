"""Mixing data sets labelled for different tasks into one training stream.

Users often have one data set with masks, another with boxes, a third with
image labels. `mix_datasets` interleaves them, example by example, with
sampling weights, into batches that all have the same structure (`tf.data`
needs one): every task of the model gets a target in every batch, filled
with the task's "unlabelled" value where a source has no label for it, and
a per-task sample weight of 0 there. The model then learns nothing for a
task from the images that are not labelled for it (DESIGN.md: a batch
without labels for a task gives it zero loss and zero gradient).

"Unlabelled" values (`unlabelled_target`):
- `Classification`: `-1` (`(C,)` of `-1` when multi-label).
- `Segmentation`: a mask of `ignore_index` (default 255) at the image size.
- `Detection`: all-padding boxes (zero boxes, label `-1`). For detection
  this alone is not "unlabelled": an image without boxes teaches the head
  "no objects here". The sample weight 0 is what keeps such an image out of
  the detection loss, so the mixed stream always carries sample weights.

Example:

```python
masks_only = pennfudan.load_pennfudan(DIR, tasks=["person"], batched=False)
boxes_only = voc_boxes.map(...)                          # (image, {"pedestrians": ...})
train = mix_datasets([masks_only, boxes_only], model.tasks, weights=[0.3, 0.7],
                     batch_size=16, seed=0)
images, targets, sample_weights = next(iter(train))     # every task in every batch
```
"""

import tensorflow as tf


def _task_kind(task):
    from keras_mtl.tasks.classification import Classification
    from keras_mtl.tasks.detection import Detection
    from keras_mtl.tasks.segmentation import Segmentation

    for kind, cls in (("classification", Classification), ("detection", Detection),
                      ("segmentation", Segmentation)):
        if isinstance(task, cls):
            return kind
    raise TypeError(
        f"Task '{task.name}' ({type(task).__name__}): mixing knows Classification, Detection "
        "and Segmentation tasks only."
    )


def unlabelled_target(task, image_shape=None, max_boxes=1, batch_size=None, dtype=None):
    """The target that says "no label for `task`" for one example or a batch.

    Args:
        task: a `keras_mtl.tasks` `Classification`, `Segmentation` or
            `Detection`.
        image_shape: `(H, W)` or `(H, W, C)`: needed for segmentation.
        max_boxes: N, the padded box count (detection).
        batch_size: `None` for one example, else a leading batch dimension
            (an int or a scalar tensor).
        dtype: dtype of class ids / masks / labels (default int32).

    Returns:
        A tensor (classification, segmentation) or `{"boxes", "labels"}`
        (detection), of the task's target shape: `()` or `(C,)`, `(H, W)`,
        `(N, 4)` and `(N,)`, with a leading `batch_size` if given.

    Example:

    >>> unlabelled_target(Segmentation("mask", 3), image_shape=(2, 2)).numpy()
    array([[255, 255],
           [255, 255]], dtype=int32)
    """
    kind = _task_kind(task)
    lead = () if batch_size is None else (batch_size,)
    dtype = tf.int32 if dtype is None else tf.as_dtype(dtype)
    if kind == "classification":
        shape = lead + ((task.num_classes,) if task.multi_label else ())
        return tf.fill(shape, tf.constant(-1, dtype))
    if kind == "segmentation":
        if image_shape is None:
            raise ValueError(f"Task '{task.name}': image_shape is needed for an unlabelled mask.")
        return tf.fill(lead + tuple(image_shape[:2]), tf.constant(task.ignore_index, dtype))
    return {"boxes": tf.zeros(lead + (max_boxes, 4), tf.float32),
            "labels": tf.fill(lead + (max_boxes,), tf.constant(-1, dtype))}


def _examples(dataset):
    """Unbatches a batched dataset (images of rank 4); checks the structure."""
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) not in (2, 3) or not isinstance(spec[1], dict):
        raise ValueError(
            "Each data set must yield (image, targets) or (image, targets, sample_weights) "
            f"with targets a dict keyed by task name; got element_spec {spec}."
        )
    if spec[0].shape.rank == 4:
        return dataset.unbatch()
    if spec[0].shape.rank != 3:
        raise ValueError(f"Images must be (H, W, 3) or (B, H, W, 3), got {spec[0].shape}.")
    return dataset


def _specs(datasets, tasks, image_shape, max_boxes):
    """The common image spec and per-task target dtypes and box counts."""
    image_specs = [ds.element_spec[0] for ds in datasets]
    shapes = {tuple(s.shape) for s in image_specs}
    if len(shapes) != 1 or None in next(iter(shapes)):
        raise ValueError(
            f"The data sets must have images of one fixed size (resize them first); got "
            f"shapes {sorted(map(str, shapes))}."
        )
    shape = next(iter(shapes))
    if image_shape is not None and tuple(image_shape) != shape[:len(tuple(image_shape))]:
        raise ValueError(f"image_shape {tuple(image_shape)} differs from the images' {shape}.")
    dtypes = {s.dtype for s in image_specs}
    image_dtype = dtypes.pop() if len(dtypes) == 1 else tf.float32
    target = {}
    for task in tasks:
        kind = _task_kind(task)
        specs = [ds.element_spec[1][task.name] for ds in datasets
                 if task.name in ds.element_spec[1]]
        if kind == "detection":
            counts = [int(s["boxes"].shape[0]) for s in specs]
            label_dtypes = {s["labels"].dtype for s in specs}
            target[task.name] = {
                "max_boxes": max(counts + [int(max_boxes or 1)]),
                "dtype": label_dtypes.pop() if len(label_dtypes) == 1 else tf.int32,
            }
        else:
            found = {s.dtype for s in specs}
            target[task.name] = {"dtype": found.pop() if len(found) == 1 else tf.int32}
    return shape, image_dtype, target


def _pad_boxes(value, max_boxes, dtype):
    boxes = tf.cast(value["boxes"], tf.float32)  # (N, 4)
    labels = tf.cast(value["labels"], dtype)  # (N,)
    pad = max_boxes - int(boxes.shape[0])
    if pad:
        boxes = tf.pad(boxes, [[0, pad], [0, 0]])
        labels = tf.pad(labels, [[0, pad]], constant_values=-1)
    return {"boxes": boxes, "labels": labels}


def complete_targets(dataset, tasks, image_shape=None, max_boxes=None, target_specs=None,
                     image_dtype=None):
    """Gives every example a target and a sample weight for every task.

    Tasks missing from `dataset` get `unlabelled_target` and weight 0;
    present ones keep their targets (boxes padded to the common count) and
    weight 1, or the dataset's own sample weight.

    Args:
        dataset: unbatched (or batched: it is unbatched) `(image, targets)`
            or `(image, targets, sample_weights)`.
        tasks: the model's tasks.
        image_shape: optional, to check the images against.
        max_boxes: boxes per detection target (default: the dataset's).
        target_specs, image_dtype: used by `mix_datasets` to agree on dtypes.

    Returns:
        An unbatched dataset of `(image, targets, sample_weights)` whose
        `targets` and `sample_weights` have one key per task.
    """
    dataset = _examples(dataset)
    if target_specs is None:
        _, found_dtype, target_specs = _specs([dataset], tasks, image_shape, max_boxes)
        image_dtype = image_dtype or found_dtype
    image_size = tuple(dataset.element_spec[0].shape[:2])

    def complete(image, targets, weights=None):
        weights = weights or {}
        out_targets, out_weights = {}, {}
        for task in tasks:
            spec = target_specs[task.name]
            present = task.name in targets
            if _task_kind(task) == "detection":
                value = (_pad_boxes(targets[task.name], spec["max_boxes"], spec["dtype"])
                         if present else
                         unlabelled_target(task, max_boxes=spec["max_boxes"], dtype=spec["dtype"]))
            elif present:
                value = tf.cast(targets[task.name], spec["dtype"])
                if value.shape.rank == 3 and value.shape[-1] == 1:  # (H, W, 1) mask
                    value = value[..., 0]
            else:
                value = unlabelled_target(task, image_size, dtype=spec["dtype"])
            out_targets[task.name] = value
            weight = weights.get(task.name, 1.0) if present else 0.0
            out_weights[task.name] = tf.cast(weight, tf.float32)
        return tf.cast(image, image_dtype), out_targets, out_weights

    return dataset.map(complete, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def mix_datasets(datasets, tasks, weights=None, batch_size=None, seed=None,
                 stop_on_empty_dataset=False, drop_remainder=False, max_boxes=None,
                 image_shape=None):
    """Interleaves data sets labelled for different tasks into one stream.

    Examples are drawn from `datasets[i]` with probability `weights[i]`
    (`tf.data.Dataset.sample_from_datasets`), completed by
    `complete_targets`, and batched. Repeat the inputs (`.repeat()`) for
    training: a finite input runs dry and, unless
    `stop_on_empty_dataset`, the others then fill the stream alone.

    Args:
        datasets: list of `tf.data.Dataset` of `(image, targets)` or
            `(image, targets, sample_weights)`, single examples or batches
            (batches are unbatched), images of one size; each labels some
            of the `tasks`.
        tasks: the model's tasks (`keras_mtl.tasks`); each target key of
            every data set must be one of them.
        weights: sampling probabilities, one per data set (normalised);
            default uniform.
        batch_size: batch the mixed stream; `None` leaves it unbatched.
        seed: sampling seed (a fixed seed gives a fixed order).
        stop_on_empty_dataset: stop when any input is exhausted.
        drop_remainder: drop a last, smaller batch.
        max_boxes: smallest padded box count of detection targets.
        image_shape: optional `(H, W, 3)` the images must have.

    Returns:
        A `tf.data.Dataset` of `(images, targets, sample_weights)`: every
        task has a target and a `(B,)` float32 weight in every batch, the
        weight 0 (and the target unlabelled) for examples from a data set
        without that task.

    Raises:
        ValueError: unknown task keys, images of different sizes, or a
            bad `weights` list.

    Example:

    ```python
    from keras_mtl.data import shapes

    masks = shapes.make_dataset(64, tasks=["mask"], batch_size=8)
    boxes = shapes.make_dataset(64, tasks=["objects"], seed=1, batch_size=8)
    mixed = mix_datasets([masks, boxes], model.tasks, weights=[0.5, 0.5], batch_size=16)
    images, targets, sample_weights = next(iter(mixed))  # weight 0 where unlabelled
    ```
    """
    datasets = [_examples(ds) for ds in datasets]
    if not datasets:
        raise ValueError("mix_datasets needs at least one data set.")
    names = [task.name for task in tasks]
    for index, ds in enumerate(datasets):
        unknown = sorted(set(ds.element_spec[1]) - set(names))
        if unknown:
            raise ValueError(f"Data set {index} has targets {unknown} that are not tasks; the "
                             f"tasks are {names}.")
    if weights is not None:
        weights = [float(w) for w in weights]
        if len(weights) != len(datasets) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"weights must be {len(datasets)} non-negative numbers with a "
                             f"positive sum, got {weights}.")
        weights = [w / sum(weights) for w in weights]
    _, image_dtype, specs = _specs(datasets, tasks, image_shape, max_boxes)
    completed = [complete_targets(ds, tasks, target_specs=specs, image_dtype=image_dtype)
                 for ds in datasets]
    if len(completed) == 1:
        mixed = completed[0]
    else:
        mixed = tf.data.Dataset.sample_from_datasets(
            completed, weights=weights, seed=seed, stop_on_empty_dataset=stop_on_empty_dataset)
    if batch_size is not None:
        mixed = mixed.batch(batch_size, drop_remainder=drop_remainder)
    return mixed.prefetch(tf.data.AUTOTUNE)
