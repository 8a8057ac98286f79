"""Runs the keras_mtl benchmarks and prints one Markdown table of ratios.

    python benchmarks/run.py                  # full run (see the README for its duration)
    python benchmarks/run.py --quick          # small model, few repeats: checks that all runs
    python benchmarks/run.py --only export,weighting --json /tmp/bench.json

Every figure is a ratio of two runs made in the same process, measured in
interleaved blocks (A B B A ...) after a warm-up, the median of the paired
per-repeat ratios (`benchmarks/timing.py`). Train steps are the model's
compiled train function (what `fit` calls each step) on one fixed batch held
in memory, without XLA unless said otherwise, Adam optimizer.

Parts (`--only` takes names or numbers):
  1 single     multi-task model vs the single-task models: step time, images/s, params
  2 keras      MultiTaskModel(static weights) vs plain Keras multi-output `loss_weights`
  3 xla        jit_compile=True vs False: step time ratio, compile time
  4 weighting  every registered weighting vs `equal` (rep-grad and full gradients), memory
  5 pipeline   tf.data images/s (shapes; PennFudan from disk) / images/s consumed in training
  6 export     SavedModel serving latency (batch 1, 8), share of decoding and NMS

stdout gets the Markdown report (header, table, notes); progress goes to
stderr; `--json` (default benchmarks/results.json) gets everything, with the
block times of every measurement.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import warnings

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PARTS = ("single", "keras", "xla", "weighting", "pipeline", "export")
TITLES = {
    "single": "Multi-task vs single-task models",
    "keras": "MultiTaskModel vs plain Keras",
    "xla": "XLA",
    "weighting": "Weightings vs equal",
    "pipeline": "Input pipeline headroom",
    "export": "SavedModel serving",
}
DEFAULT_JSON = os.path.join(_REPO, "benchmarks", "results.json")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="micro_resnet, 32 px, batch 8, 1 warm-up, 3 repeats of 2 steps")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated parts, names or numbers 1-6: {', '.join(PARTS)}")
    parser.add_argument("--json", default=DEFAULT_JSON,
                        help="where to write the JSON results (default %(default)s)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="shapes image size, a multiple of 32 (default 64; quick 32)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 32; quick 8")
    parser.add_argument("--trunk", default=None,
                        help="trunk name (default tiny_resnet; quick micro_resnet)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="interleaved timed blocks per side (default 7; quick 3)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed calls after the first one (default 3; quick 1)")
    parser.add_argument("--steps", type=int, default=None,
                        help="calls per timed block (default 3; quick 2)")
    parser.add_argument("--weightings", default=None,
                        help="part 4: comma-separated weighting names (default: all registered)")
    args = parser.parse_args(argv)
    args.parts = _parse_parts(parser, args.only)
    if args.image_size is not None and args.image_size % 32:
        parser.error(f"--image-size must be a multiple of 32, got {args.image_size}")
    return args


def _parse_parts(parser, only):
    if not only:
        return list(PARTS)
    parts = []
    for item in only.split(","):
        item = item.strip().lower()
        if item.isdigit() and 1 <= int(item) <= len(PARTS):
            item = PARTS[int(item) - 1]
        if item not in PARTS:
            parser.error(f"unknown part {item!r}; use names or numbers 1-6: {', '.join(PARTS)}")
        if item not in parts:
            parts.append(item)
    return [p for p in PARTS if p in parts]


def machine_info():
    """TF/Keras versions, CPU counts, device, load: the table's header."""
    import keras
    import tensorflow as tf

    import keras_mtl

    gpus = tf.config.list_physical_devices("GPU")
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    cpu_model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as file:
            cpu_model = next(line.split(":", 1)[1].strip() for line in file
                             if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_mtl": keras_mtl.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "cpu_model": cpu_model,
        "device": "GPU: " + ", ".join(g.name for g in gpus) if gpus else "CPU",
        "loadavg_start": _loadavg(),
        "git": _git_revision(),
        "platform": platform.platform(),
    }


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _git_revision():
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=_REPO,
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=_REPO, capture_output=True, text=True, timeout=10).stdout
        return head + ("+dirty" if dirty.strip() else "") if head else None
    except (OSError, subprocess.SubprocessError):
        return None


def markdown_report(meta, settings, rows, seconds):
    """The Markdown text printed on stdout: header, table, notes."""
    load = meta.get("loadavg_start")
    load_end = meta.get("loadavg_end")
    cpus = meta["cpu_affinity"] or meta["cpu_count"]
    busy = load and load[0] > 0.5 * cpus
    lines = [
        f"**keras_mtl benchmarks** ({'quick' if settings.quick else 'full'} run, "
        f"{meta['date']}, git {meta['git']})",
        "",
        f"TensorFlow {meta['tensorflow']}, Keras {meta['keras']}, Python {meta['python']}; "
        f"device {meta['device']}; {meta['cpu_count']} CPUs "
        f"({meta['cpu_affinity']} usable), {meta['cpu_model']}.",
        f"Load average (1, 5, 15 min) at start {load}, at end {load_end}"
        + (" — the machine was busy: absolute times are noisy; ratios are measured "
           "interleaved to cancel most of it." if busy else "."),
        f"Settings: trunk `{settings.trunk}`, {settings.image_size} px, batch "
        f"{settings.batch_size}, Adam, no XLA unless said; warm-up {settings.warmup} calls "
        f"after the first, {settings.repeats} interleaved blocks of {settings.steps} calls, "
        f"median of paired ratios. Ran in {seconds / 60:.1f} min.",
        "",
        f"Where: every part ran in one process on this machine's {meta['device']} "
        "(TensorFlow); nothing ran on another machine. Ratios are A / B as named: lower is "
        "better, except part 5 (headroom) and images/s. Times in the detail column are "
        "each side's own median; the ratio is the median of paired (adjacent) blocks, so the "
        "two can disagree while the machine's load changes.",
        "",
        "| # | measure | value | goal | status | detail |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        detail = row.note.replace("|", "\\|")
        lines.append(f"| {row.part} | {row.label} | {row.formatted_value()} | "
                     f"{row.formatted_goal()} | {row.status} | {detail} |")
    lines.append("")
    return "\n".join(lines)


def run(argv=None):
    """Runs the chosen parts; returns the results dict (also written as JSON)."""
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    import tensorflow as tf

    from benchmarks import common

    tf.get_logger().setLevel("ERROR")  # retracing notices: every part builds several models

    settings = common.Settings.make(
        quick=args.quick, image_size=args.image_size, batch_size=args.batch_size,
        trunk=args.trunk, repeats=args.repeats, warmup=args.warmup, steps=args.steps)
    meta = machine_info()
    common.progress(f"parts {args.parts}; {settings}")
    start = time.perf_counter()
    rows, parts = [], {}
    for part in args.parts:
        part_start = time.perf_counter()
        module = __import__(f"benchmarks.bench_{part}", fromlist=["run"])
        try:
            if part == "weighting" and args.weightings:
                result = module.run(settings, names=args.weightings.split(","))
            else:
                result = module.run(settings)
        except Exception as error:  # noqa: BLE001 - one failed part must not lose the others
            reason = f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
            common.progress(f"part {part} failed: {reason}")
            result = common.PartResult(
                [common.Row(str(PARTS.index(part) + 1), f"{part}.error", TITLES[part], None,
                            status="ERROR", note=reason)], {"error": reason})
        result.seconds = time.perf_counter() - part_start
        common.progress(f"part {part} took {result.seconds:.0f} s")
        rows.extend(result.rows)
        parts[part] = {"seconds": result.seconds, **result.data}
    seconds = time.perf_counter() - start
    meta["loadavg_end"] = _loadavg()
    table = markdown_report(meta, settings, rows, seconds)
    results = {
        "meta": meta,
        "settings": settings.__dict__,
        "seconds": seconds,
        "rows": [row.as_dict() for row in rows],
        "parts": parts,
        "markdown": table,
    }
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as file:
            json.dump(results, file, indent=1, default=float)
    print(table)
    return results


def main(argv=None):
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
