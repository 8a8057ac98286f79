"""Part 4: every registered weighting vs `equal`: train-step time and memory.

For each name in `keras_mtl.weighting.names()` (read at run time, so new
methods are benchmarked for free): a multi-task model (all shapes tasks,
T = 3 with detection; `--quick`: classification + segmentation, T = 2, to
halve the tracing time) with that weighting, timed interleaved with one
`equal` model on the same fixed batch (E M M E E M ...), ratio = median of
the paired per-repeat ratios (wall time; the ratio of the process' CPU
time is recorded too, `cpu_ratio`, the steadier figure on a loaded
machine: see `CpuClock`). Gradient-based methods run twice, with
`rep_grad=True` (per-task gradients of the shared features) and `False`
(of all shared parameters); a method that refuses one (`ValueError` or
`TypeError` from its constructor) shows "n/a". `static` gets weight 1 per
task. The `equal` row is a control (equal vs a second equal model): its
distance from 1.00x shows the noise of the measurement.

Goals (issue 9): loss-based <= 1.05x; gradient-based with rep_grad <= 1.5x;
with full parameter gradients <= T + 0.5.

Memory, two figures per method:
- `grads`: the size of the `(T, D)` float32 per-task gradient matrix that a
  gradient-based step builds (D = the trunk's trainable parameters, or with
  rep_grad the trunk's output features P2..P5 of one batch); exact.
- `ΔRSS`: the process' peak resident memory while the timed steps run
  (sampled every 2 ms in a thread) minus the RSS just before them, after the
  first call and the warm-up. On a CPU TensorFlow has no peak-memory counter
  (`tf.config.experimental.get_memory_info` is GPU-only) and the allocator
  reuses memory freed by earlier models, so this is rough: a lower bound of
  the step's extra working set.
"""

import math
import time

from benchmarks import common, timing


class CpuClock:
    """Wraps a step; records the process' CPU time (all threads) of every call.

    On a machine shared with other jobs a block's wall time mostly measures
    how long the scheduler kept the process waiting; its CPU time measures the
    work (`time.process_time`, every TensorFlow thread), so the CPU-time ratio
    is the steadier figure there. On an idle machine the two differ where a
    method runs serial ops (small solves) among the parallel convolutions.
    """

    def __init__(self, fn):
        self.fn = fn
        self.calls = []

    def __call__(self):
        start = time.process_time()
        self.fn()
        self.calls.append(time.process_time() - start)

    def blocks(self, warmup, steps):
        """CPU seconds per call of each timed block (the calls after `warmup`)."""
        timed = self.calls[warmup:]
        return [sum(timed[i:i + steps]) / steps for i in range(0, len(timed), steps)]


def _accepts(factory, kwargs):
    """Whether the weighting can be made with `kwargs` (`"upgrad"` refuses
    rep_grad): a refused setting is not a configuration to time."""
    try:
        factory(**kwargs)
    except ValueError:
        return False
    return True


def weighting_configs(num_tasks, task_names):
    """`[(label, name, kwargs, kind)]` for every registered weighting.

    kind is "loss", "rep_grad" or "full".
    """
    from keras_mtl import weighting

    configs = []
    for name in weighting.names():
        factory = weighting.WEIGHTINGS.lookup(name)
        kwargs = {"weights": {task: 1.0 for task in task_names}} if name == "static" else {}
        if getattr(factory, "gradient_based", False):
            for label, rep_grad, kind in (("rep_grad", True, "rep_grad"),
                                          ("full grads", False, "full")):
                if _accepts(factory, {**kwargs, "rep_grad": rep_grad}):
                    configs.append((f"{name} ({label})", name,
                                    {**kwargs, "rep_grad": rep_grad}, kind))
        else:
            configs.append((f"{name} (control)" if name == "equal" else name, name, kwargs,
                            "loss"))
    return configs


def goal_for(kind, num_tasks):
    return {"loss": ("<=", 1.05), "rep_grad": ("<=", 1.5), "full": ("<=", num_tasks + 0.5)}[kind]


def gradient_matrix_mb(model, kind, batch_size):
    """Size in MB of the `(T, D)` float32 per-task gradient matrix."""
    if kind == "loss":
        return 0.0
    if kind == "rep_grad":
        dims = sum(math.prod(int(d) for d in t.shape[1:]) for t in model.trunk.outputs)
        dims *= batch_size
    else:
        dims = common.count_params(model.trunk)
    return len(model.tasks) * dims * 4 / 1e6


def run(settings, names=None):
    from keras_mtl import weighting

    common.reset()
    tasks = common.shapes_tasks(["label", "mask"] if settings.quick else None)
    keys = [task.name for task in tasks]
    num_tasks = len(keys)
    batch = common.shapes_batch(settings, keys)
    configs = weighting_configs(num_tasks, keys)
    if names is not None:
        configs = [c for c in configs if c[1] in names]
    common.progress(f"part 4: {len(configs)} weighting configurations vs equal, T={num_tasks}")

    baseline = common.TrainStep(common.build_model(settings, tasks, name="mtl_equal"), batch)
    baseline.first()
    rows, results = [], {}
    for label, name, kwargs, kind in configs:
        goal = goal_for(kind, num_tasks)
        key = f"weighting.{name}.{kind}"
        try:
            method = weighting.get(name, **kwargs)
        except (ValueError, TypeError) as error:
            reason = str(error).splitlines()[0]
            refused = ", ".join(f"{k}={v}" for k, v in kwargs.items() if k != "weights")
            rows.append(common.Row("4", key, f"{label} / equal: step time", None, "x", goal=goal,
                                   status="n/a", note=f"refuses {refused} "
                                                      f"({type(error).__name__})"))
            results[label] = {"refused": f"{type(error).__name__}: {reason}"}
            continue
        common.progress(f"  {label}")
        try:
            model = common.build_model(settings, common.shapes_tasks(keys), weighting=method,
                                       name=f"mtl_{name}")
            step = common.TrainStep(model, batch)
            first = step.first()
            sampler = timing.RssSampler()
            clocks = {"equal": CpuClock(baseline), "method": CpuClock(step)}
            times = timing.interleaved_times(clocks, settings.warmup, settings.repeats,
                                             settings.steps, timed_context=sampler)
            cpu_times = {name: clock.blocks(settings.warmup, settings.steps)
                         for name, clock in clocks.items()}
        except Exception as error:  # noqa: BLE001 - one broken method must not stop the suite
            reason = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}" if str(error) \
                else type(error).__name__
            rows.append(common.Row("4", key, f"{label} / equal: step time", None, "x", goal=goal,
                                   status="ERROR", note=reason))
            results[label] = {"error": reason}
            common.progress(f"    failed: {reason}")
            continue
        ratio = timing.paired_ratio(times["method"], times["equal"])
        cpu_ratio = timing.paired_ratio(cpu_times["method"], cpu_times["equal"])
        grads_mb = gradient_matrix_mb(model, kind, settings.batch_size)
        rss_mb = sampler.peak_growth / 1e6
        memory = f"grads {grads_mb:.1f} MB, " if kind != "loss" else ""
        rows.append(common.Row(
            "4", key, f"{label} / equal: step time", ratio, "x", goal=goal,
            note=f"{1000 * timing.median(times['method']):.1f} vs "
                 f"{1000 * timing.median(times['equal']):.1f} ms; CPU time {cpu_ratio:.2f}x; "
                 f"{memory}ΔRSS {rss_mb:+.0f} MB"))
        results[label] = {
            "name": name, "kind": kind, "kwargs": {k: v for k, v in kwargs.items()},
            "step_ratio": ratio, "median_step_s": timing.median(times["method"]),
            "equal_median_step_s": timing.median(times["equal"]), "first_call_s": first,
            "grads_matrix_mb": grads_mb, "rss_peak_growth_mb": rss_mb, "block_times_s": times,
            "cpu_ratio": cpu_ratio, "median_cpu_s": timing.median(cpu_times["method"]),
            "equal_median_cpu_s": timing.median(cpu_times["equal"]), "block_cpu_s": cpu_times,
        }
        del model, step
    data = {"tasks": keys, "num_tasks": num_tasks, "equal_first_call_s": baseline.first_call_s,
            "methods": results}
    return common.PartResult(rows, data)
