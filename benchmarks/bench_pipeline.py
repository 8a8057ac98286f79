"""Part 5: input-pipeline headroom = images/s the tf.data pipeline delivers
alone / images/s the model consumes in training (goal >= 3).

Pipelines, each as `fit` sees it (wrapped in `MultiTaskModel.check_dataset`,
the per-batch input checks `fit` adds), read batch by batch with `next()`:
- shapes, generated on the fly (`cache=False`: every image drawn anew, the
  cost of a first epoch or of an endless stream);
- shapes, cached (`cache=True` after one full pass: later epochs, as in
  `recipes/shapes.py`), shuffled;
- PennFudan (`keras_mtl.data.pennfudan`, `../shared/data/PennFudanPed`) as
  `recipes/pennfudan.py` reads it: files decoded from disk once (that time
  is given apart), then shuffled, batched and augmented with
  `JointAugmentation` in tf.data at every step; "n/a" without the loader.

Each pipeline block first takes a few batches untimed (what its prefetch
buffers gathered while the train block ran), then times `PIPELINE_BLOCK`
batches. The model side is the train step of the multi-task model on the same tasks,
image size and batch size (on a fixed batch, as in the other parts). Pipeline batches
and train steps are timed in interleaved blocks, but not at the same time:
in real training both share the CPU, so the headroom is an upper bound
there (on a GPU the pipeline has the CPU to itself).
"""

import os
import time

from benchmarks import common, timing


def _images_per_s(batch_size, seconds):
    return batch_size / seconds


def _next_batch(iterator):
    import tensorflow as tf

    def fetch():
        batch = next(iterator)
        tf.nest.flatten(batch)[0].numpy()

    return fetch


def _headroom_rows(label, key, batch_size, pipe_times, step_times, note=""):
    pipe = _images_per_s(batch_size, timing.median(pipe_times))
    train = _images_per_s(batch_size, timing.median(step_times))
    ratio = timing.paired_ratio(step_times, pipe_times)  # = pipeline img/s / train img/s
    return common.Row(
        "5", key, f"{label}: pipeline / training images/s", ratio, "x", goal=(">=", 3.0),
        note=f"{pipe:,.0f} vs {train:,.0f} img/s{note}"), {"pipeline_images_per_s": pipe,
                                                          "train_images_per_s": train,
                                                          "headroom": ratio}


DRAIN_BATCHES = 8  # untimed at the start of each pipeline block
PIPELINE_BLOCK = 8  # timed batches per pipeline block


def _interleave_with_drain(fns, settings):
    """Interleaved blocks (as `timing.interleaved_times`), where each pipeline
    block first takes `DRAIN_BATCHES` batches untimed: while a train block
    runs, the pipeline's prefetch buffers fill up, and batches taken from
    them would cost nothing. What is timed is then the pipeline's own rate."""
    def drained(fn):
        def block_fn():
            for _ in range(DRAIN_BATCHES):
                fn()
        return block_fn

    drains = {name: drained(fn) for name, fn in fns.items() if name != "train"}
    for name, fn in fns.items():
        for _ in range(settings.warmup + 2):
            fn()
    times = {name: [] for name in fns}
    names = list(fns)
    for repeat in range(settings.repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            if name == "train":
                times[name].append(timing.time_block(fns[name], settings.steps))
            else:
                drains[name]()
                times[name].append(timing.time_block(fns[name], PIPELINE_BLOCK))
    return times


def run(settings):
    common.reset()
    rows, data = [], {}
    rows_shapes, data["shapes"] = _shapes(settings)
    rows.extend(rows_shapes)
    common.reset()
    row, data["pennfudan"] = _pennfudan(settings)
    rows.append(row)
    return common.PartResult(rows, data)


def _shapes(settings):
    from keras_mtl.data import shapes

    tasks = common.shapes_tasks()
    keys = [task.name for task in tasks]
    size, batch_size = settings.image_size, settings.batch_size
    common.progress(f"part 5: shapes pipeline vs training at {size}px, batch {batch_size}")
    model = common.build_model(settings, tasks)
    step = common.TrainStep(model, common.shapes_batch(settings, keys))
    step.first()
    cached_examples = 16 * batch_size
    pipelines = {
        "generated": shapes.make_dataset(1_000_000, image_size=size, batch_size=batch_size,
                                         repeat=True, drop_remainder=True, tasks=keys),
        "cached": shapes.make_dataset(cached_examples, image_size=size, batch_size=batch_size,
                                      shuffle=True, repeat=True, drop_remainder=True,
                                      cache=True, tasks=keys),
    }
    fns = {name: _next_batch(iter(model.check_dataset(ds))) for name, ds in pipelines.items()}
    for _ in range(cached_examples // batch_size + 1):  # fill the cache: one full pass
        fns["cached"]()
    fns["train"] = step
    times = _interleave_with_drain(fns, settings)
    rows, data = [], {"tasks": keys, "block_times_s": times}
    for name, label in (("generated", "shapes, generated"), ("cached", "shapes, cached")):
        row, data[name] = _headroom_rows(label, f"pipeline.shapes_{name}", batch_size,
                                         times[name], times["train"])
        rows.append(row)
    return rows, data


# --- PennFudan ----------------------------------------------------------------------------
def _pennfudan(settings):
    """PennFudan as `recipes/pennfudan.py` trains on it: the train split decoded
    from disk once (timed apart), then shuffled, batched and augmented with
    `JointAugmentation` (flip, scale 0.7-1.4, shift 0.1, colour) in tf.data."""
    import tensorflow as tf

    key, label = "pipeline.pennfudan", "PennFudan, disk + augmentation"
    title = f"{label}: pipeline / training images/s"
    try:
        from keras_mtl.data import pennfudan
        from keras_mtl.data.augment import JointAugmentation

        pennfudan.load_pennfudan  # noqa: B018 - the loader's entry point
    except (ImportError, AttributeError):
        return common.Row("5", key, title, None, "x", goal=(">=", 3.0),
                          status="n/a (loader missing)"), {"status": "loader missing"}
    if not os.path.isdir(common.PENNFUDAN_ROOT):
        return common.Row("5", key, title, None, "x", goal=(">=", 3.0),
                          status="n/a (data missing)"), \
            {"status": f"no data at {common.PENNFUDAN_ROOT}"}
    size, batch_size = settings.pennfudan_size, settings.pennfudan_batch
    try:
        start = time.perf_counter()
        arrays = pennfudan.load_arrays(common.PENNFUDAN_ROOT, "all", image_size=size)
        decode_s = time.perf_counter() - start  # all files read and decoded (cached after)
        num_files = len(arrays["images"])
        tasks = pennfudan.make_tasks()
        augment = JointAugmentation.from_tasks(tasks, scale_range=(0.7, 1.4), translate=0.1,
                                               seed=0)
        dataset = pennfudan.load_pennfudan(common.PENNFUDAN_ROOT, "train", image_size=size,
                                           batch_size=batch_size, repeat=True,
                                           drop_remainder=True, augment=augment, seed=0)
        common.progress(f"part 5: PennFudan pipeline vs training at {size}px, batch "
                        f"{batch_size}, tasks {[t.name for t in tasks]}")
        model_settings = common.Settings(**{**settings.__dict__, "image_size": size})
        model = common.build_model(model_settings, tasks)
        images, targets = next(iter(dataset))
        step = common.TrainStep(model, (tf.cast(images, tf.float32), targets))
        step.first()
        fns = {"pipeline": _next_batch(iter(model.check_dataset(dataset))), "train": step}
        times = _interleave_with_drain(fns, settings)
        row, data = _headroom_rows(
            label, key, batch_size, times["pipeline"], times["train"],
            note=f" at {size}px, batch {batch_size}; decoding the {num_files} files from "
                 f"disk once: {decode_s:.1f} s ({num_files / decode_s:,.0f} img/s)")
        data.update(image_size=size, batch_size=batch_size, tasks=[t.name for t in tasks],
                    disk_decode_s=decode_s, files=num_files, block_times_s=times)
        return row, data
    except Exception as error:  # noqa: BLE001 - report, go on with the other parts
        reason = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}" if str(error) \
            else type(error).__name__
        common.progress(f"  PennFudan failed: {reason}")
        return common.Row("5", key, title, None, "x", goal=(">=", 3.0), status="ERROR",
                          note=reason), {"error": reason}
