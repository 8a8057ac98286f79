"""Part 3: `jit_compile=True` (XLA) vs `False` for the multi-task train step.

Two copies of the multi-task model (all shapes tasks, `equal`, same seed)
compiled with and without XLA, timed interleaved on one fixed batch:

- step-time ratio = t(XLA) / t(no XLA), median of paired repeats. The goal
  (<= 0.75) is the issue's goal on a GPU; on a CPU XLA is often slower
  (FACTS.md), so on a CPU the figure is reported without PASS/MISS;
- compile time = first call with XLA (tracing + graph optimisation + XLA
  compilation + one step) minus the median XLA step; the same figure
  without XLA (tracing + graph optimisation) is given for comparison.
"""

from benchmarks import common, timing


def run(settings):
    import tensorflow as tf

    common.reset()
    tasks = common.shapes_tasks()
    keys = [task.name for task in tasks]
    batch = common.shapes_batch(settings, keys)
    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    common.progress(f"part 3: jit_compile True vs False, tasks {keys}")

    steps, errors = {}, {}
    for name, jit in (("xla", True), ("graph", False)):
        model = common.build_model(settings, common.shapes_tasks(keys), jit_compile=jit,
                                   name=f"mtl_{name}")
        steps[name] = common.TrainStep(model, batch)
    first = {}
    for name, step in list(steps.items()):
        try:
            first[name] = step.first()
        except Exception as error:  # noqa: BLE001 - report, do not stop the suite
            errors[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
            del steps[name]
    if errors:
        rows = [common.Row("3", "xla.step_ratio", "XLA / no XLA: train step time", None, "x",
                           note=f"failed: {errors}")]
        return common.PartResult(rows, {"errors": errors, "first_call_s": first})

    times = timing.interleaved_times(steps, settings.warmup, settings.repeats, settings.steps)
    ratio = timing.paired_ratio(times["xla"], times["graph"])
    medians = {name: timing.median(t) for name, t in times.items()}
    compile_s = first["xla"] - medians["xla"]
    trace_s = first["graph"] - medians["graph"]
    device = "GPU" if on_gpu else "CPU"
    rows = [
        common.Row("3", "xla.step_ratio", "XLA / no XLA: train step time", ratio, "x",
                   goal=("<=", 0.75), status=None if on_gpu else "n/a (CPU)",
                   note=f"{1000 * medians['xla']:.1f} vs {1000 * medians['graph']:.1f} ms on "
                        f"{device}; goal ≤ 0.75 is for a GPU"),
        common.Row("3", "xla.compile_s", "XLA: compile time (first call − step)", compile_s, "s",
                   note=f"without XLA, tracing + graph optimisation: {trace_s:.1f} s"),
    ]
    data = {"tasks": keys, "step_ratio": ratio, "median_step_s": medians, "first_call_s": first,
            "compile_s": compile_s, "trace_s_no_xla": trace_s, "block_times_s": times,
            "device": device}
    return common.PartResult(rows, data)
