"""Architectures on the shapes data: per-task metrics, delta-m, parameters, step time.

    python benchmarks/architectures.py            # full run (tiny_resnet, 64 px, 1000 steps)
    python benchmarks/architectures.py --quick    # micro_resnet, 32 px, 30 steps: checks the run
    python benchmarks/architectures.py --only hps,mtan,separate --train-steps 300

Every registered architecture (`keras_mtl.architectures.names()`) is built on
the same trunk with the shapes data set's three tasks (classification
`label`, detection `objects`, segmentation `mask`), `equal` weighting, and
trained with the same budget: the same training batches (seed 0), the same
number of steps, the same optimizer (AdamW with cosine decay,
`keras_mtl.evaluation.compare.default_optimizer`), no XLA. Each is then
evaluated on the same validation set (seed 1) with
`keras_mtl.evaluation.evaluate_tasks`: accuracy, COCO mAP (and mAP@.5),
mIoU.

- delta-m (`keras_mtl.evaluation.delta_m`, Maninis et al. 2019) is taken
  against `separate` (one trunk per task, the single-task baseline trained
  in the same run) on label accuracy, objects mAP and mask mIoU; a task
  whose baseline metric is 0 (an untrained detector in a quick run) leaves
  delta-m undefined, and the per-task gains are shown instead.
- parameters: all, and trainable (`adapters` freezes the trunk).
- step time: the compiled train step (`fit`'s train function) on one fixed
  batch held in memory, all architectures timed in interleaved blocks after
  a warm-up (`benchmarks/timing.py`); the ratio to `hps` is the median of
  the paired per-repeat ratios. Goal: `mtan` <= 1.3x `hps`.

`cascade` needs a dependency: here `mask` reads `objects` (the detection
heatmap), the example of the issue.

stdout gets a Markdown table; progress goes to stderr; `--json` gets the
numbers.
"""

import argparse
import json
import math
import os
import sys
import time
import warnings

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_JSON = os.path.join(_REPO, "benchmarks", "architectures.json")
DELTA_METRICS = {"label": "accuracy", "objects": "map", "mask": "miou"}
SHOWN_METRICS = (("label", "accuracy"), ("objects", "map"), ("objects", "map50"),
                 ("mask", "miou"))
MTAN_GOAL = 1.3  # mtan step time <= 1.3x hps
ARCHITECTURE_ARGUMENTS = {"cascade": {"depends_on": {"mask": "objects"}}}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="micro_resnet, 32 px, batch 8, 30 steps, 64 validation images")
    parser.add_argument("--only", default=None,
                        help="comma-separated architecture names (default all; `separate` is "
                             "added for delta-m and `hps` for the step-time ratio)")
    parser.add_argument("--trunk", default=None, help="default tiny_resnet; quick micro_resnet")
    parser.add_argument("--image-size", type=int, default=None, help="default 64; quick 32")
    parser.add_argument("--batch-size", type=int, default=None, help="default 32; quick 8")
    parser.add_argument("--train-steps", type=int, default=None, help="default 1000; quick 30")
    parser.add_argument("--val-images", type=int, default=None, help="default 512; quick 64")
    parser.add_argument("--repeats", type=int, default=None,
                        help="interleaved timed blocks per architecture (default 7; quick 5)")
    parser.add_argument("--steps", type=int, default=None,
                        help="train steps per timed block (default 3; quick 1)")
    parser.add_argument("--json", default=DEFAULT_JSON, help="default %(default)s")
    args = parser.parse_args(argv)
    if args.image_size is not None and args.image_size % 32:
        parser.error(f"--image-size must be a multiple of 32, got {args.image_size}")
    return args


def settings_from(args):
    from benchmarks import common

    settings = common.Settings.make(quick=args.quick, image_size=args.image_size,
                                    batch_size=args.batch_size, trunk=args.trunk,
                                    repeats=args.repeats, steps=args.steps)
    settings.train_steps = args.train_steps or (30 if args.quick else 1000)
    settings.val_images = args.val_images or (64 if args.quick else 512)
    return settings


def chosen_architectures(only):
    from keras_mtl import architectures

    names = architectures.names()
    if not only:
        return names
    chosen = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in names]
    if unknown:
        raise SystemExit(f"Unknown architecture(s) {unknown}; valid: {', '.join(names)}.")
    chosen = set(chosen) | {"separate", "hps"}
    return [name for name in names if name in chosen]


def build(name, settings):
    import keras_mtl as mtl
    from benchmarks import common

    architecture = mtl.architectures.get(name, **ARCHITECTURE_ARGUMENTS.get(name, {}))
    return mtl.build_mtl(common.shapes_tasks(), trunk=settings.trunk, weights=None,
                         input_shape=(settings.image_size, settings.image_size, 3),
                         weighting="equal", architecture=architecture, name=f"mtl_{name}")


def train_all(names, settings):
    """Trains and evaluates every architecture with the same budget; returns runs."""
    import keras

    from benchmarks import common
    from keras_mtl.data import shapes
    from keras_mtl.evaluation.compare import train_and_evaluate

    train = shapes.make_dataset(settings.train_steps * settings.batch_size,
                                image_size=settings.image_size, batch_size=settings.batch_size,
                                seed=0, drop_remainder=True)
    val = shapes.make_dataset(settings.val_images, image_size=settings.image_size,
                              batch_size=settings.batch_size, seed=1, cache=True)
    runs = {}
    for name in names:
        common.progress(f"{name}: build, train {settings.train_steps} steps, evaluate")
        keras.utils.set_random_seed(0)
        model = build(name, settings)
        start = time.perf_counter()
        result = train_and_evaluate(model, train, val, epochs=1, jit_compile=False,
                                    name=name)
        runs[name] = {
            "model": model, "metrics": result.metrics, "train_seconds": result.train_seconds,
            "params": int(model.count_params()),
            "trainable_params": common.count_params(model),
            "wall_seconds": time.perf_counter() - start,
        }
    return runs


def time_steps(runs, settings):
    """Interleaved train-step times of every trained model on one fixed batch."""
    from benchmarks import common, timing

    batch = common.shapes_batch(settings, ["label", "objects", "mask"], seed=2)
    steps = {name: common.TrainStep(run["model"], batch) for name, run in runs.items()}
    first = {name: step.first() for name, step in steps.items()}
    common.progress(f"timing {len(steps)} train steps, {settings.repeats} interleaved blocks")
    times = timing.interleaved_times(steps, settings.warmup, settings.repeats, settings.steps)
    return times, first


def delta_vs_separate(metrics, baseline):
    """`(delta_m or None, {task: gain % or None}, reason)` on `DELTA_METRICS`."""
    from keras_mtl.evaluation import delta_m_per_task

    gains, reasons = {}, []
    for task, metric in DELTA_METRICS.items():
        try:
            gains[task] = delta_m_per_task({task: {metric: metrics[task][metric]}},
                                           {task: {metric: baseline[task][metric]}})[task]["delta"]
        except (KeyError, ValueError):
            gains[task] = None
            reasons.append(f"{task} {metric} baseline {baseline.get(task, {}).get(metric)}")
    if any(gain is None for gain in gains.values()):
        return None, gains, "; ".join(reasons)
    return sum(gains.values()) / len(gains), gains, ""


def _fmt(value, digits=3):
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}f}"


def _signed(value):
    return "n/a" if value is None else f"{value:+.1f}%"


def report(runs, times, first, settings, meta, seconds):
    from benchmarks import timing

    lines = [
        f"**keras_mtl architectures** ({'quick' if settings.quick else 'full'} run, "
        f"{meta['date']}, git {meta['git']})",
        "",
        f"TensorFlow {meta['tensorflow']}, Keras {meta['keras']}; device {meta['device']}; "
        f"{meta['cpu_count']} CPUs; load average at start {meta['loadavg_start']}, at end "
        f"{meta.get('loadavg_end')}.",
        f"Shapes data, tasks label (classification), objects (detection), mask "
        f"(segmentation); trunk `{settings.trunk}`, {settings.image_size} px, batch "
        f"{settings.batch_size}, {settings.train_steps} training steps each (AdamW, cosine), "
        f"`equal` weighting, no XLA; {settings.val_images} validation images. Step time: "
        f"fixed batch, {settings.repeats} interleaved blocks of {settings.steps} step(s) after "
        f"{settings.warmup} warm-up. Ran in {seconds / 60:.1f} min.",
        "",
        "| architecture | label acc | objects mAP | objects mAP@.5 | mask mIoU | delta-m vs "
        "separate | params (trainable) | step | step / hps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    baseline = runs["separate"]["metrics"] if "separate" in runs else None
    hps_times = times.get("hps")
    rows = {}
    for name, run in runs.items():
        metrics = run["metrics"]
        values = [metrics.get(task, {}).get(metric) for task, metric in SHOWN_METRICS]
        if baseline is None:
            delta, gains, reason = None, {}, "no separate run"
        elif name == "separate":
            delta, gains, reason = 0.0, {}, "baseline"
        else:
            delta, gains, reason = delta_vs_separate(metrics, baseline)
        if delta is None:
            parts = ", ".join(f"{t} {_signed(g)}" for t, g in gains.items())
            delta_text = f"n/a ({reason}){'; ' + parts if parts else ''}"
        else:
            delta_text = "0 (baseline)" if name == "separate" else _signed(delta)
        step = timing.median(times[name])
        ratio = timing.paired_ratio(times[name], hps_times) if hps_times else None
        rows[name] = {"metrics": metrics, "delta_m": delta, "delta_per_task": gains,
                      "delta_note": reason, "params": run["params"],
                      "trainable_params": run["trainable_params"], "step_s": step,
                      "step_ratio_vs_hps": ratio, "first_call_s": first[name],
                      "train_seconds": run["train_seconds"], "block_times_s": times[name]}
        lines.append(
            f"| {name} | {' | '.join(_fmt(v) for v in values)} | {delta_text} | "
            f"{run['params']:,} ({run['trainable_params']:,}) | {1000 * step:.1f} ms | "
            f"{_fmt(ratio, 2)}x |")
    lines.append("")
    mtan_ratio = rows.get("mtan", {}).get("step_ratio_vs_hps")
    if mtan_ratio is not None:
        status = "PASS" if mtan_ratio <= MTAN_GOAL else "MISS"
        lines.append(f"Goal: `mtan` step time <= {MTAN_GOAL}x `hps`: {mtan_ratio:.2f}x, {status}.")
    lines.append("delta-m: mean over tasks of the relative gain (percent) on label accuracy, "
                 "objects mAP and mask mIoU against `separate`; positive = better.")
    lines.append("")
    return "\n".join(lines), rows


def run(argv=None):
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    import tensorflow as tf

    from benchmarks import common
    from benchmarks.run import _loadavg, machine_info

    tf.get_logger().setLevel("ERROR")
    settings = settings_from(args)
    names = chosen_architectures(args.only)
    meta = machine_info()
    common.progress(f"architectures {names}; {settings}")
    start = time.perf_counter()
    common.reset()
    runs = train_all(names, settings)
    times, first = time_steps(runs, settings)
    meta["loadavg_end"] = _loadavg()
    text, rows = report(runs, times, first, settings, meta, time.perf_counter() - start)
    print(text)
    results = {"meta": meta, "settings": vars(settings), "architectures": rows}
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=1, default=float)
        common.progress(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    run()
