"""Part 2: `MultiTaskModel` with `static` weights vs plain Keras multi-output training.

Both sides train the *same layers* (the plain model is
`keras.Model(mtl_model.input, mtl_model.output)`, a plain Functional model
over the multi-task model's graph), on the same fixed batch, with Adam and
no XLA:

- keras_mtl: `MultiTaskModel` with `StaticWeighting` and its custom
  `train_step` (per-task masked losses, weighting, per-task metrics,
  `weight/<task>` logs);
- plain Keras: `compile(loss={task: SparseCategoricalCrossentropy(from_logits=True)},
  loss_weights=..., metrics=...)` with the same metrics (accuracy; mIoU and
  pixel accuracy), Keras' own `train_step`.

Classification + segmentation only: detection has no plain Keras loss.
Both train functions are the ones `fit` calls each step, so the ratio is the
per-step overhead of keras_mtl's `train_step` over Keras' (`fit`'s own
per-step bookkeeping is the same on both sides; `MultiTaskModel.fit` also
maps its input checks over the dataset, which runs in the tf.data pipeline,
measured in part 5).
"""

from benchmarks import common, timing

WEIGHTS = {"label": 1.0, "mask": 0.5}


def run(settings):
    import keras

    from keras_mtl.data import shapes

    common.reset()
    keys = [shapes.TASK_NAMES["classification"], shapes.TASK_NAMES["segmentation"]]
    tasks = common.shapes_tasks(keys)
    weights = dict(zip(keys, WEIGHTS.values()))
    batch = common.shapes_batch(settings, keys)
    common.progress(f"part 2: MultiTaskModel(static {weights}) vs plain Keras loss_weights")

    mtl_model = common.build_model(settings, tasks, weighting=weights, name="mtl_static")
    plain = keras.Model(mtl_model.input, mtl_model.output, name="plain_keras")
    label, mask = keys
    num_seg = tasks[1].num_classes
    plain.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss={key: keras.losses.SparseCategoricalCrossentropy(from_logits=True) for key in keys},
        loss_weights=weights,
        metrics={
            label: [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            mask: [keras.metrics.MeanIoU(num_seg, sparse_y_pred=False, name="miou"),
                   keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        },
        jit_compile=False,
    )
    steps = {"keras_mtl": common.TrainStep(mtl_model, batch),
             "plain_keras": common.TrainStep(plain, batch)}
    first = {name: step.first() for name, step in steps.items()}
    times = timing.interleaved_times(steps, settings.warmup, settings.repeats, settings.steps)
    ratio = timing.paired_ratio(times["keras_mtl"], times["plain_keras"])
    medians = {name: timing.median(t) for name, t in times.items()}
    rows = [common.Row(
        "2", "keras.step_ratio", "MultiTaskModel(static) / plain Keras `loss_weights`: step time",
        ratio, "x", goal=("<=", 1.05),
        note=f"{1000 * medians['keras_mtl']:.1f} vs {1000 * medians['plain_keras']:.1f} ms; "
             f"tasks {'+'.join(keys)} (detection has no plain Keras loss)")]
    data = {"tasks": keys, "weights": weights, "step_ratio": ratio, "median_step_s": medians,
            "first_call_s": first, "block_times_s": times}
    return common.PartResult(rows, data)
