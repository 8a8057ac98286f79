"""Part 1: one multi-task model vs the single-task models of the same tasks.

Measures, on one fixed shapes batch (same trunk, heads, batch size, Adam,
no XLA), the train step of the multi-task model (all tasks, `equal`
weighting) and of each single-task model (`build_single_task`: same trunk,
one head), interleaved block by block:

- step-time ratio = t(multi-task) / sum over tasks of t(single-task), the
  median over repeats of that ratio within each repeat;
- images/s: batch / t for the multi-task model; batch / sum t for the set
  of single-task models (each image must go through all of them); the
  images/s ratio is the inverse of the step-time ratio;
- the floor of the step-time ratio, "1/T plus the heads' cost": a
  trunk-only model (the same trunk with a tiny head: global pooling of
  P2..P5 and one dense unit) is timed in the same interleaved blocks, and
  floor = (sum t(single) - (T - 1) t(trunk only)) / sum t(single), the
  ratio a multi-task step would have if sharing the trunk saved exactly
  T - 1 trunk passes and nothing else;
- trainable-parameter ratio = params(multi-task) / sum params(single-task),
  (trunk + heads) / (T x trunk + heads).
"""

import numpy as np

from benchmarks import common, timing


def run(settings):
    common.reset()
    tasks = common.shapes_tasks()
    keys = [task.name for task in tasks]
    batch = common.shapes_batch(settings, keys)
    common.progress(f"part 1: multi-task {keys} vs {len(keys)} single-task models")

    model = common.build_model(settings, tasks, name="multi_task")
    steps = {"multi_task": common.TrainStep(model, batch)}
    params = {"multi_task": common.count_params(model)}
    for task in common.shapes_tasks(keys):  # fresh task objects: own heads
        single = common.build_model(settings, [task], name=f"single_{task.name}")
        steps[task.name] = common.TrainStep(single, common.subset(batch, [task.name]))
        params[task.name] = common.count_params(single)
    steps["trunk_only"] = common.TrainStep(
        _trunk_only_model(settings), (batch[0], np.zeros((settings.batch_size, 1), "float32")))
    first = {name: step.first() for name, step in steps.items()}

    times = timing.interleaved_times(steps, settings.warmup, settings.repeats, settings.steps)
    singles_sum = [sum(times[key][r] for key in keys) for r in range(settings.repeats)]
    step_ratio = timing.paired_ratio(times["multi_task"], singles_sum)
    mtl_step = timing.median(times["multi_task"])
    singles_step = timing.median(singles_sum)
    num_tasks = len(keys)
    floor = timing.median(
        (singles_sum[r] - (num_tasks - 1) * times["trunk_only"][r]) / singles_sum[r]
        for r in range(settings.repeats))
    batch_size = settings.batch_size
    param_ratio = params["multi_task"] / sum(params[key] for key in keys)
    trunk_params = common.count_params(model.trunk)

    rows = [
        common.Row("1", "single.step_ratio",
                   f"Multi-task / {num_tasks} single-task models: train step time", step_ratio,
                   "x", note=f"{1000 * mtl_step:.1f} ms vs {1000 * singles_step:.1f} ms "
                             f"(sum); floor (1/{num_tasks} + heads) ≈ {floor:.2f}, from a trunk-only "
                             f"step of {1000 * timing.median(times['trunk_only']):.1f} ms"),
        common.Row("1", "single.images_per_s_ratio",
                   "Multi-task / single-task models: images/s", 1.0 / step_ratio, "x",
                   note=f"{batch_size / mtl_step:,.0f} vs {batch_size / singles_step:,.0f} img/s"),
        common.Row("1", "single.params_ratio",
                   "Multi-task / single-task models: trainable parameters", param_ratio, "x",
                   note=f"{params['multi_task']:,} vs {sum(params[k] for k in keys):,}; "
                        f"1/{num_tasks} + heads' share"),
    ]
    data = {
        "tasks": keys, "params": params, "trunk_params": trunk_params,
        "step_ratio": step_ratio, "param_ratio": param_ratio, "step_ratio_floor": floor,
        "median_step_s": {name: timing.median(t) for name, t in times.items()},
        "singles_sum_step_s": singles_step, "first_call_s": first, "block_times_s": times,
        "images_per_s": {"multi_task": batch_size / mtl_step,
                         "single_task_set": batch_size / singles_step},
    }
    return common.PartResult(rows, data)


def _trunk_only_model(settings):
    """The trunk with a tiny head (pooled P2..P5 -> 1 unit, MSE to a target of 0)."""
    import keras

    import keras_mtl as mtl

    keras.utils.set_random_seed(0)
    trunk = mtl.trunks.get(settings.trunk, input_shape=(settings.image_size,) * 2 + (3,))
    images = keras.Input(trunk.inputs[0].shape[1:], name="images")
    features = trunk(images)
    pooled = [keras.layers.GlobalAveragePooling2D()(features[level]) for level in sorted(features)]
    output = keras.layers.Dense(1)(keras.layers.Concatenate()(pooled))
    model = keras.Model(images, output, name="trunk_only")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", jit_compile=False)
    return model

