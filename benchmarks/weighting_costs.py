"""The cost table of every registered weighting vs `equal` (issue 21), from part 4 runs.

`benchmarks/run.py --only weighting` measures every registered weighting
against `equal` (see `benchmarks/bench_weighting.py`). On a loaded machine
its runs may be split by `--weightings` into several processes; this script
merges their JSON files into one (each run keeps its own `equal` baseline,
so each ratio comes from one process) and writes the Markdown table with the
goals of issue 21: loss-based <= 1.05x, gradient-based with `rep_grad`
<= 1.2x, with the full parameter gradients <= 1.6x (T = 3), judged on the
ratio of the process' CPU time where the runs recorded it (`cpu_ratio`),
else on the wall-time ratio.

    python -m benchmarks.weighting_costs RUN.json [RUN.json ...] \
        --json benchmarks/results/weighting_costs.json --md benchmarks/results/weighting_costs.md
"""

import argparse
import json
import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

GOALS = {"loss": 1.05, "rep_grad": 1.2, "full": 1.6}

# Short citations, one per registered name (the module docstrings give the full ones).
PAPERS = {
    "adatask": "Yang et al., AAAI 2023",
    "aligned_mtl": "Senushkin et al., CVPR 2023",
    "auto": "`calibrated` with rep_grad, 100 steps (this project)",
    "cagrad": "Liu et al., NeurIPS 2021",
    "calibrated": "this project (GradNorm's equal-norm target, held)",
    "calibrated_pcgrad": "this project: `calibrated`, then PCGrad (Yu et al., NeurIPS 2020)",
    "config": "Liu, Chu, Thuerey, ICLR 2025",
    "cr_mogm": "Zhou et al., NeurIPS 2022",
    "db_mtl": "Lin et al., arXiv 2308.12029, 2023",
    "dualproj": "Lopez-Paz, Ranzato, NeurIPS 2017; Quinton, Rey 2024",
    "dwa": "Liu, Johns, Davison, CVPR 2019",
    "equal": "-",
    "excess_mtl": "He et al., ICML 2024",
    "fairgrad": "Ban, Ji, ICML 2024",
    "famo": "Liu et al., NeurIPS 2023",
    "gls": "Chennupati et al., CVPR-W 2019",
    "go4align": "Shen et al., NeurIPS 2024",
    "graddrop": "Chen et al., NeurIPS 2020",
    "gradnorm": "Chen et al., ICML 2018",
    "gradvac": "Wang et al., ICLR 2021",
    "imtl": "Liu et al., ICLR 2021",
    "imtl_l": "Liu et al., ICLR 2021 (loss half)",
    "krum": "Blanchard et al., NeurIPS 2017",
    "log_losses": "Lin et al., 2023 (DB-MTL's loss half)",
    "mgda": "Sener, Koltun, NeurIPS 2018",
    "moco": "Fernando et al., ICLR 2023",
    "modo": "Chen et al., NeurIPS 2023",
    "nash_mtl": "Navon et al., ICML 2022",
    "pbi": "Zhang, Li, IEEE TEVC 2007",
    "pcgrad": "Yu et al., NeurIPS 2020",
    "rlw": "Lin et al., TMLR 2022",
    "sdmgrad": "Xiao, Ban, Ji, NeurIPS 2023",
    "static": "- (Keras `loss_weights`)",
    "stch": "Lin et al., ICML 2024",
    "trimmed_mean": "Yin et al., ICML 2018",
    "uncertainty": "Kendall, Gal, Cipolla, CVPR 2018",
    "upgrad": "Quinton, Rey 2024",
}


def load(paths):
    """`(runs, configs)`: each run's meta and settings, and every configuration's result."""
    runs, configs = [], {}
    for path in paths:
        with open(path) as file:
            data = json.load(file)
        part = data["parts"]["weighting"]
        run = {"file": os.path.basename(path), "meta": data["meta"], "settings": data["settings"],
               "seconds": data["seconds"], "num_tasks": part.get("num_tasks"),
               "tasks": part.get("tasks"), "equal_first_call_s": part.get("equal_first_call_s"),
               "names": list(dict.fromkeys(result.get("name") or label.split(" (")[0]
                                           for label, result in part.get("methods", {}).items()))}
        runs.append(run)
        for label, result in part.get("methods", {}).items():
            configs[label] = {**result, "run": run["file"]}
    return runs, configs


def _accepts(factory, **kwargs):
    """Whether the weighting can be made so (`"upgrad"` refuses rep_grad=True)."""
    try:
        factory(**kwargs)
    except ValueError:
        return False
    return True


def rows(configs):
    """One dict per registered weighting: name, kind, rep_grad allowed, ratios, goals met."""
    from keras_mtl import weighting

    table = []
    for name in weighting.names():
        factory = weighting.WEIGHTINGS.lookup(name)
        gradient = bool(getattr(factory, "gradient_based", False))
        row = {"name": name, "paper": PAPERS.get(name, "?"),
               "kind": "gradient" if gradient else "loss"}
        if gradient:
            row["rep_grad_allowed"] = bool(getattr(factory, "supports_rep_grad", True))
            for kind, label in (("rep_grad", f"{name} (rep_grad)"),
                                ("full", f"{name} (full grads)")):
                row[kind] = configs.get(label)
                if row[kind] is None and not _accepts(factory, rep_grad=kind == "rep_grad"):
                    row[kind] = {"refused": f"{name} refuses rep_grad={kind == 'rep_grad'}"}
        else:
            row["rep_grad_allowed"] = None
            row["loss"] = configs.get(f"{name} (control)" if name == "equal" else name)
        table.append(row)
    return table


def ratio_of(result, measure="cpu"):
    """The CPU-time ratio (`cpu_ratio`, runs since it is recorded) or the wall ratio."""
    if measure == "cpu" and "cpu_ratio" in result:
        return result["cpu_ratio"]
    return result["step_ratio"]


def cell(result, kind, measure="cpu"):
    """`(text, met)` for one measured configuration."""
    if result is None:
        return "not run", None
    if "refused" in result:
        return "n/a", None
    if "error" in result:
        return "error", None
    ratio = ratio_of(result, measure)
    met = ratio <= GOALS[kind]
    return format_ratio(ratio, GOALS[kind]), met


def format_ratio(ratio, goal):
    """`1.07x`; three decimals where two would round onto the goal (`1.204x` misses 1.2x)."""
    text = f"{ratio:.2f}"
    if float(text) == goal and ratio != goal:
        text = f"{ratio:.3f}"
    return text + "x"


def markdown(runs, table):
    lines = []
    first = runs[0]
    settings = first["settings"]
    loads = [run["meta"].get("loadavg_start") for run in runs] + \
            [run["meta"].get("loadavg_end") for run in runs]
    load_1min = [load[0] for load in loads if load]
    lines += [
        "# Every registered weighting vs `equal`: train-step time (issue 21)",
        "",
        f"Machine: {first['meta']['cpu_count']}-core CPU ({first['meta']['cpu_model']}), no GPU, "
        f"shared with other jobs: 1-minute load average {min(load_1min):.1f} to "
        f"{max(load_1min):.1f} at the starts and ends of the runs (2 cores). TensorFlow "
        f"{first['meta']['tensorflow']}, Keras {first['meta']['keras']}, "
        f"{first['meta']['date'][:10]}.",
        "",
        f"Settings: trunk `{settings['trunk']}`, {settings['image_size']} px, batch "
        f"{settings['batch_size']}, T = {first['num_tasks']} ({', '.join(first['tasks'])}), "
        f"Adam, no XLA; warm-up {settings['warmup']} call after the first, "
        f"{settings['repeats']} interleaved blocks of {settings['steps']} calls per side; ratio "
        "= median of the paired per-block ratios (method / equal).",
        "",
        "Commands (run from a snapshot of the committed tree, so that edits by other sessions "
        "could not reach the running benchmark; niced; split into "
        f"{len(runs)} processes by `--weightings`, two at a time, to finish in time):",
        "",
        "```",
    ]
    for run in runs:
        lines.append(f"nice -n 19 python benchmarks/run.py --only weighting --batch-size "
                     f"{run['settings']['batch_size']} --repeats {run['settings']['repeats']} "
                     f"--warmup {run['settings']['warmup']} --steps {run['settings']['steps']} "
                     f"--weightings {','.join(run['names'])} --json {run['file']}   "
                     f"# {run['seconds'] / 60:.0f} min, git {run['meta']['git'] or '?'}")
    lines += [
        "python -m benchmarks.weighting_costs A.json B.json ... --json "
        "benchmarks/results/weighting_costs.json --md benchmarks/results/weighting_costs.md",
        "```",
        "",
        "Each process has its own `equal` model as the baseline; the `equal (control)` row (equal "
        "vs a second equal model) shows the noise of one ratio.",
        "",
        "Two ratios per configuration: the process' CPU time (all TensorFlow threads; "
        "`bench_weighting.CpuClock`), which measures the work and stays steady on a loaded "
        "machine, and the wall time, which on this machine mostly measures how long the "
        "scheduler kept the process waiting. The goals are judged on the CPU-time ratio.",
        "",
        "Goals (issue 21): loss-based <= 1.05x; gradient-based with `rep_grad` <= 1.2x; with the "
        "full parameter gradients <= 1.6x. \"n/a\": the method refuses `rep_grad=True` (its paper "
        "defines it on parameter gradients only).",
        "",
        "| weighting | kind | CPU: loss / rep_grad | CPU: full grads | wall: loss / rep_grad | "
        "wall: full grads | CPU ms / step (method vs equal) | goals met (CPU) | run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table:
        if row["kind"] == "loss":
            text, met = cell(row["loss"], "loss")
            wall = cell(row["loss"], "loss", "wall")[0]
            full = wall_full = ""
            results = [row["loss"]]
            verdict = {True: "yes", False: "no", None: "-"}[met]
        else:
            text, met_rep = cell(row["rep_grad"], "rep_grad")
            full, met_full = cell(row["full"], "full")
            wall = cell(row["rep_grad"], "rep_grad", "wall")[0]
            wall_full = cell(row["full"], "full", "wall")[0]
            results = [row["rep_grad"], row["full"]]
            verdict = " / ".join({True: "yes", False: "no", None: "-"}[m]
                                 for m in (met_rep, met_full))
        ms = "; ".join(f"{1000 * r['median_cpu_s']:.0f} vs {1000 * r['equal_median_cpu_s']:.0f}"
                       for r in results if r and "median_cpu_s" in r)
        run = next((r["run"] for r in results if r and "run" in r), "")
        lines.append(f"| `{row['name']}` | {row['kind']} | {text} | {full} | {wall} | "
                     f"{wall_full} | {ms} | {verdict} | {run} |")
    lines += ["", summary(table), ""]
    return "\n".join(lines)


def summary(table):
    """Which configurations meet the goals (CPU-time ratios), as a paragraph."""
    met, missed = {k: [] for k in GOALS}, {k: [] for k in GOALS}
    for row in table:
        kinds = ("loss",) if row["kind"] == "loss" else ("rep_grad", "full")
        for kind in kinds:
            result = row.get(kind)
            if result is None or "step_ratio" not in result:
                continue
            ratio = ratio_of(result)
            (met if ratio <= GOALS[kind] else missed)[kind].append(
                f"`{row['name']}` {format_ratio(ratio, GOALS[kind])}")
    names = {"loss": "loss-based", "rep_grad": "gradient-based with rep_grad",
             "full": "full parameter gradients"}
    parts = []
    for kind in GOALS:
        total = len(met[kind]) + len(missed[kind])
        text = f"{names[kind]} (<= {GOALS[kind]}x): {len(met[kind])} of {total} meet the goal"
        if missed[kind]:
            text += "; missed by " + ", ".join(missed[kind])
        parts.append(text)
    return "Goals met (CPU-time ratios): " + "; ".join(parts) + "."


def readme_table(table):
    """The README's method table (name, paper, loss/gradient, rep_grad, cost vs equal)."""
    lines = ["| weighting | paper | kind | rep_grad | cost vs `equal` (T = 3, CPU time) |",
             "|---|---|---|---|---|"]
    for row in table:
        if row["kind"] == "loss":
            cost = cell(row["loss"], "loss")[0]
            rep = "-"
        else:
            rep_text = cell(row["rep_grad"], "rep_grad")[0]
            full_text = cell(row["full"], "full")[0]
            cost = (f"{rep_text} rep_grad, {full_text} full" if row["rep_grad_allowed"]
                    else f"{full_text} full")
            rep = "yes" if row["rep_grad_allowed"] else "no"
        lines.append(f"| `{row['name']}` | {row['paper']} | {row['kind']} | {rep} | {cost} |")
    return "\n".join(lines)


def main(argv=None):
    import keras_mtl.quiet  # noqa: F401

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="JSON files of benchmarks/run.py --only weighting")
    parser.add_argument("--json", required=True)
    parser.add_argument("--md", required=True)
    parser.add_argument("--git", default=None,
                        help="the revision the runs measured, where their JSON has none (a run "
                             "from a snapshot of the tree outside git)")
    args = parser.parse_args(argv)
    runs, configs = load(args.runs)
    for run in runs:
        if args.git and not run["meta"].get("git"):
            run["meta"]["git"] = args.git
    table = rows(configs)
    with open(args.json, "w") as file:
        json.dump({"goals": GOALS, "runs": runs, "weightings": table}, file, indent=1,
                  default=float)
    with open(args.md, "w") as file:
        file.write(markdown(runs, table))
    print(readme_table(table))


if __name__ == "__main__":
    main()
