"""A multi-seed leaderboard of multi-task methods against single-task baselines.

`run_leaderboard` trains, for every seed, one single-task model per task
(the baselines, reused by every method of that seed) and one multi-task
model per method, all on the same batches (the data factory rebuilds the
same pipeline from the seed for every run), with the same trunk, optimizer
recipe and number of steps. Each run is evaluated on the validation data
(`evaluate_tasks`) and appended to a JSONL results file as soon as it ends;
rerunning the same sweep skips the runs already in the file, so a killed
sweep loses at most the run in progress. A method that raises is recorded as
a failed row with its error and the sweep goes on.

Per method it reports the mean and standard deviation of every metric, and
delta-m (`keras_mtl.evaluation.delta_m`, each seed against the same seed's
baselines) as a mean with a 95% Student-t confidence interval over seeds,
the per-task relative change, and the training-time ratio (multi-task
seconds over the summed single-task seconds). With `same_compute`, chosen
methods also train for as many steps as fit in the summed single-task time
(the "same compute" comparison; times from the fastest run of each, so that
a run slowed by other work on the machine does not inflate the budget).

The data factory is any callable `factory(seed) -> LeaderboardData`, so a
user's own data set works as ours do (`keras_mtl.data.pennfudan.leaderboard_data`,
`keras_mtl.data.shapes.leaderboard_data`).

Example:

```python
from keras_mtl.data import shapes

def factory(seed):
    train = shapes.make_dataset(64, image_size=64, batch_size=8, seed=seed).repeat()
    val = shapes.make_dataset(32, image_size=64, batch_size=8, seed=1000)
    return LeaderboardData(shapes.make_tasks(), train, val)

board = run_leaderboard(factory, ["equal", "famo", "imtl:rep_grad"], seeds=[0, 1, 2],
                        steps=200, results_path="runs/shapes.jsonl", trunk="micro_resnet")
print(board.markdown())
```
"""

import dataclasses
import datetime
import gc
import hashlib
import json
import math
import os
import time
import traceback

import keras

from keras_mtl.builders import build_mtl, build_single_task
from keras_mtl.callbacks.loss_curve import TaskLossCurve
from keras_mtl.callbacks.weight_trace import TaskWeightTrace
from keras_mtl.evaluation.compare import (DEFAULT_DELTA_METRICS, _fresh, _kind, select_tasks,
                                          train_and_evaluate)
from keras_mtl.evaluation.confidence import mean_confidence_interval, standard_deviation
from keras_mtl.evaluation.delta_m import delta_m_per_task
from keras_mtl.evaluation.methods import Method, parse_method
from keras_mtl.evaluation.training_loss import training_loss_markdown

SINGLE, MULTI, SAME_COMPUTE = "single", "multi", "same_compute"


@dataclasses.dataclass
class LeaderboardData:
    """What a data factory returns for one seed.

    Args:
        tasks: the `keras_mtl.tasks` of the multi-task model.
        train: batched training `tf.data.Dataset` in the data contract,
            repeated (at least `steps` batches); the same seed must give
            the same batches.
        validation: batched validation data (finite).
        input_shape: `(H, W, 3)`; default: read from `train`.
        delta_metrics: `{task: [metric, ...]}` entering delta-m; default per
            task kind: accuracy, map (multi-label), miou, map (detection).
        class_names: optional `{task: [names]}` for `evaluate_tasks`.
        name: the data set's name (part of the results' fingerprint).
    """

    tasks: list
    train: object
    validation: object
    input_shape: tuple = None
    delta_metrics: dict = None
    class_names: dict = None
    name: str = "data"


def _target_names(dataset):
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2 or not isinstance(spec[1], dict):
        raise ValueError("The data factory's datasets must yield (images, {task: target}[, "
                         f"sample_weights]) batches; got element_spec {spec}.")
    return list(spec[1])


def check_data(data):
    """Raises a `ValueError` if `data` (a `LeaderboardData`) breaks the contract."""
    if not isinstance(data, LeaderboardData):
        raise ValueError(f"The data factory must return a LeaderboardData, got {type(data).__name__}.")
    names = [task.name for task in data.tasks]
    if not names:
        raise ValueError("The data factory returned no tasks.")
    for split, dataset in (("training", data.train), ("validation", data.validation)):
        targets = _target_names(dataset)
        unknown = [name for name in targets if name not in names]
        if unknown:
            raise ValueError(f"The {split} data has targets for task(s) {unknown} that the model "
                             f"lacks; its tasks are {names}.")
        missing = [name for name in names if name not in targets]
        if missing:
            raise ValueError(f"Task(s) {missing} have no targets in the {split} data "
                             f"(it has {targets}).")
    for task, metrics in (data.delta_metrics or {}).items():
        if task not in names:
            raise ValueError(f"delta_metrics names task '{task}', not among the tasks {names}.")
        if not metrics:
            raise ValueError(f"delta_metrics of task '{task}' is empty.")


def _input_shape(data):
    if data.input_shape is not None:
        return tuple(data.input_shape)
    shape = data.train.element_spec[0].shape
    return tuple(int(d) for d in shape[1:])


def _batch_size(data):
    size = data.train.element_spec[0].shape[0]
    return None if size is None else int(size)


def _delta_metrics(data):
    metrics = {t.name: tuple(DEFAULT_DELTA_METRICS[_kind(t)]) for t in data.tasks}
    metrics.update({t: tuple(m) for t, m in (data.delta_metrics or {}).items()})
    return metrics


# --- results file ----------------------------------------------------------------------
def read_results(path):
    """The rows of a JSONL results file (missing file: none; a torn last line is skipped)."""
    if not path or not os.path.exists(path):
        return []
    rows = []
    with open(path) as file:
        for line in file:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a write cut off by a kill
                continue
    return rows


def _append(path, row):
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "a") as file:
        file.write(json.dumps(row, default=float) + "\n")
        file.flush()
        os.fsync(file.fileno())


def _key(kind, label, seed):
    return f"{kind}|{label}|{seed}"


# --- one run ---------------------------------------------------------------------------
def _train_one(build, train, validation, steps, optimizer, jit_compile, class_names, name,
               trunk_lr=1.0):
    """Trains and evaluates one model: `(metrics, train seconds, train CPU seconds,
    weight trace, loss curve)`.

    The trace is `[[step, {task: weight}], ...]` at 9 steps (`TaskWeightTrace`);
    the curve `[[step, {task: mean training loss since the previous point}], ...]`
    at the same steps (`TaskLossCurve`)."""
    model = build()
    trace = TaskWeightTrace(total_steps=steps)
    curve = TaskLossCurve(total_steps=steps)
    result = train_and_evaluate(model, train, validation, epochs=1, steps_per_epoch=steps,
                                optimizer=optimizer, jit_compile=jit_compile,
                                class_names=class_names, name=name, callbacks=[trace, curve],
                                trunk_lr=trunk_lr)
    return (result.metrics, result.train_seconds, result.train_cpu_seconds,
            [[step, w] for step, w in trace.trace],
            [[step, losses] for step, losses in curve.curve])


def _clear():
    keras.backend.clear_session()
    gc.collect()


# --- summaries -------------------------------------------------------------------------
@dataclasses.dataclass
class MethodSummary:
    """One method's results over seeds (what a leaderboard row shows)."""

    label: str
    seeds: list
    failed: list
    delta_m: list
    delta_m_mean: float
    delta_m_low: float
    delta_m_high: float
    per_task_delta: dict  # {task: mean relative change in percent}
    per_task_interval: dict  # {task: (low, high)}, the confidence interval of that mean
    metrics: dict  # {task: {metric: (mean, std)}}
    time_ratio: float
    errors: list


@dataclasses.dataclass
class Leaderboard:
    """The outcome of `run_leaderboard`: every row and the per-method summaries."""

    rows: list
    tasks: list
    delta_metrics: dict
    seeds: list
    labels: list
    steps: int
    confidence: float = 0.95

    def _ok(self, kind, label=None):
        return [r for r in self.rows if r["kind"] == kind and r["status"] == "ok"
                and (label is None or r["label"] == label)]

    def baselines(self):
        """`{seed: {task: (metrics, seconds)}}` of the finished single-task runs."""
        out = {}
        for row in self._ok(SINGLE):
            out.setdefault(row["seed"], {})[row["label"]] = (row["metrics"], row["train_seconds"])
        return out

    def baseline_summary(self):
        """`{task: {metric: (mean, std)}}` of the single-task runs over seeds."""
        values = {}
        for runs in self.baselines().values():
            for task, (metrics, _) in runs.items():
                for metric in self.delta_metrics[task]:
                    values.setdefault(task, {}).setdefault(metric, []).append(
                        metrics[task][metric])
        return {task: {m: (_mean(v), standard_deviation(v)) for m, v in metrics.items()}
                for task, metrics in values.items()}

    def summary(self, label, kind=MULTI):
        """The `MethodSummary` of one method (kind `"multi"` or `"same_compute"`)."""
        baselines = self.baselines()
        deltas, per_task, ratios, metric_values, seeds = [], {}, [], {}, []
        for row in self._ok(kind, label):
            seed = row["seed"]
            base = baselines.get(seed, {})
            if any(task not in base for task in self.tasks):
                continue  # this seed's baselines are not all done (or failed)
            seeds.append(seed)
            mtl = {t: {m: row["metrics"][t][m] for m in ms} for t, ms in self.delta_metrics.items()}
            single = {t: {m: base[t][0][t][m] for m in ms} for t, ms in self.delta_metrics.items()}
            try:
                gains = delta_m_per_task(mtl, single)
                deltas.append(sum(g["delta"] for g in gains.values()) / len(gains))
                for task, gain in gains.items():
                    per_task.setdefault(task, []).append(gain["delta"])
            except ValueError:  # a zero baseline: no relative change for this seed
                deltas.append(math.nan)
            total = sum(base[t][1] for t in self.tasks)
            ratios.append(row["train_seconds"] / total if total else math.nan)
            for task, metrics in mtl.items():
                for metric, value in metrics.items():
                    metric_values.setdefault(task, {}).setdefault(metric, []).append(value)
        failed = [r for r in self.rows if r["kind"] == kind and r["label"] == label
                  and r["status"] != "ok"]
        mean, low, high = mean_confidence_interval(deltas, self.confidence)
        return MethodSummary(
            label=label, seeds=seeds, failed=[r["seed"] for r in failed], delta_m=deltas,
            delta_m_mean=mean, delta_m_low=low, delta_m_high=high,
            per_task_delta={t: _mean(v) for t, v in per_task.items()},
            per_task_interval={t: mean_confidence_interval(v, self.confidence)[1:]
                               for t, v in per_task.items()},
            metrics={t: {m: (_mean(v), standard_deviation(v)) for m, v in ms.items()}
                     for t, ms in metric_values.items()},
            time_ratio=_mean(ratios), errors=[r.get("error", "") for r in failed])

    def summaries(self):
        """Every method's summary (and its same-compute variant), best delta-m first."""
        out = [self.summary(label) for label in self.labels]
        out += [dataclasses.replace(self.summary(label, SAME_COMPUTE),
                                    label=f"{label} [same compute]")
                for label in self.labels
                if any(r["kind"] == SAME_COMPUTE and r["label"] == label for r in self.rows)]
        return sorted(out, key=lambda s: -s.delta_m_mean if math.isfinite(s.delta_m_mean)
                      else math.inf)

    def paired_difference(self, label, reference):
        """`(mean, low, high, n)` of the per-seed delta-m of `label` minus `reference`.

        Both methods are scored against the same seed's baselines on the same
        batches, so the seed-to-seed noise that both share (a lucky split, an
        easy validation fold) cancels: a paired interval is much narrower
        than the two methods' own intervals. Seeds where either lacks a
        finite delta-m are left out.
        """
        mine, other = self.summary(label), self.summary(reference)
        ours, theirs = dict(zip(mine.seeds, mine.delta_m)), dict(zip(other.seeds, other.delta_m))
        differences = [ours[s] - theirs[s] for s in ours if s in theirs
                       and math.isfinite(ours[s]) and math.isfinite(theirs[s])]
        mean, low, high = mean_confidence_interval(differences, self.confidence)
        return mean, low, high, len(differences)

    def report_markdown(self, reference=None):
        """`markdown` and, where the rows have training-loss curves, the table of
        each method's final training loss per task against single-task
        (`keras_mtl.evaluation.training_loss`) under it."""
        table = self.markdown(reference=reference)
        fit = training_loss_markdown(self.rows, self.labels, self.tasks)
        return table + (f"\n\n{fit}" if fit else "")

    def markdown(self, reference=None):
        """The leaderboard as a Markdown table (one row per method, baselines last).

        Args:
            reference: a method label for the paired "vs" column (the
                per-seed difference of delta-m, mean and interval); default
                `"equal"` when it is among the methods.

        Raises:
            ValueError: `reference` is not one of the leaderboard's methods.
        """
        if reference is not None and reference not in self.labels:
            raise ValueError(f"the paired column's method {reference!r} is not among the "
                             f"methods {self.labels}.")
        tasks = self.tasks
        if reference is None and "equal" in self.labels:
            reference = "equal"
        header = (["rank", "method", f"delta-m % (mean, {self.confidence:.0%} CI)"]
                  + ([f"vs `{reference}` (paired)"] if reference else [])
                  + [f"{t} vs single" for t in tasks]
                  + [f"{t} {'/'.join(self.delta_metrics[t])}" for t in tasks]
                  + ["time ratio", "seeds"])
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        summaries = self.summaries()
        shown = [s for s in summaries if s.seeds or s.failed]
        waiting = [s.label for s in summaries if not (s.seeds or s.failed)]
        for rank, s in enumerate(shown, 1):
            if math.isfinite(s.delta_m_low):
                delta = f"{s.delta_m_mean:+.2f} [{s.delta_m_low:+.2f}, {s.delta_m_high:+.2f}]"
            else:
                delta = _pct(s.delta_m_mean)
            cells = [str(rank), f"`{s.label}`", delta]
            if reference:
                cells.append(self._paired_cell(s.label, reference))
            cells += [_pct(s.per_task_delta.get(t, math.nan)) for t in tasks]
            cells += [_metric_cell(s.metrics.get(t, {}), self.delta_metrics[t]) for t in tasks]
            finite = sum(1 for d in s.delta_m if math.isfinite(d))
            seeds = f"{finite}" if finite == len(s.seeds) else f"{finite} of {len(s.seeds)}"
            seeds += f" ({len(s.failed)} failed)" if s.failed else ""
            cells += [_num(s.time_ratio, "{:.2f}x"), seeds]
            lines.append("| " + " | ".join(cells) + " |")
        base = self.baseline_summary()
        cells = (["", "single-task baselines", "0 (reference)"] + ([""] if reference else [])
                 + [""] * len(tasks))
        cells += [_metric_cell(base.get(t, {}), self.delta_metrics[t]) for t in tasks]
        cells += ["1.00x", str(len(self.baselines()))]
        lines.append("| " + " | ".join(cells) + " |")
        if waiting:
            lines.append("")
            lines.append("Not run yet (or their seeds' baselines are missing): "
                         + ", ".join(f"`{label}`" for label in waiting) + ".")
        return "\n".join(lines)

    def _paired_cell(self, label, reference):
        plain = label.replace(" [same compute]", "")
        if plain == reference or plain != label:
            return ""
        mean, low, high, count = self.paired_difference(label, reference)
        if not math.isfinite(low):
            return _pct(mean)
        return f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]"

    def to_dict(self):
        """A JSON-able summary."""
        return {"steps": self.steps, "seeds": self.seeds, "tasks": self.tasks,
                "delta_metrics": {t: list(m) for t, m in self.delta_metrics.items()},
                "baselines": self.baseline_summary(),
                "methods": [dataclasses.asdict(s) for s in self.summaries()]}


def _mean(values):
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _num(value, fmt):
    return "n/a" if value is None or not math.isfinite(value) else fmt.format(value)


def _pct(value):
    return _num(value, "{:+.2f}")


def _metric_cell(metrics, names):
    parts = []
    for name in names:
        mean, std = metrics.get(name, (math.nan, math.nan))
        text = _num(mean, "{:.3f}")
        if math.isfinite(std):
            text += f" +- {std:.3f}"
        parts.append(text)
    return " / ".join(parts)


# --- the sweep -------------------------------------------------------------------------
# Task options added after committed sweeps began, with their defaults: left out of
# the fingerprint while they hold that default, so that those sweeps still resume.
_OPTIONS_ADDED_LATER = {("Segmentation", "head_convs"): 0}


def _task_description(task):
    config = task.get_config()
    kind = type(task).__name__
    return {key: value for key, value in config.items()
            if _OPTIONS_ADDED_LATER.get((kind, key), object()) != value}


def _fingerprint(data, trunk, weights, steps, tag):
    description = {"data": data.name, "tasks": [_task_description(t) for t in data.tasks],
                   "input_shape": list(_input_shape(data)), "batch_size": _batch_size(data),
                   "trunk": str(trunk), "weights": str(weights), "steps": int(steps),
                   "tag": tag}
    text = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def run_leaderboard(data_factory, methods, seeds, steps, results_path, trunk="small_resnet",
                    weights=None, optimizer=None, same_compute=(), jit_compile=False, tag="",
                    retry_failed=False, confidence=0.95, progress=print):
    """Trains the baselines and every method for every seed; returns a `Leaderboard`.

    Args:
        data_factory: `callable(seed) -> LeaderboardData`; called before
            each run (after `keras.utils.set_random_seed(seed)`), so every
            run of a seed sees the same batches.
        methods: method strings (`keras_mtl.evaluation.methods`), `Method`
            objects or dicts; labels must be distinct.
        seeds: the seeds (at least one; 3 or more for a confidence interval).
        steps: training steps of every run.
        results_path: the JSONL file the rows are appended to; its finished
            rows for the same sweep (same data, tasks, input shape, batch
            size, trunk, weights, steps and `tag`) are reused.
        trunk, weights: as for `build_mtl` (the baselines get the same).
        optimizer: `callable(total_steps) -> optimizer` (default AdamW with
            a cosine decay, `compare.default_optimizer`).
        same_compute: labels of methods to train again for the summed
            single-task time of the seed.
        jit_compile: XLA.
        tag: a free text that separates sweeps with other settings (e.g. an
            optimizer) in the same results file.
        retry_failed: run failed rows again instead of keeping them.
        confidence: the coverage of the delta-m interval.
        progress: `callable(str)` for one line per run (`None`: silent).

    Returns:
        A `Leaderboard` over this sweep's rows of the file.

    Raises:
        ValueError: no seeds or methods, a duplicate, an unknown method or
            architecture, `same_compute` naming a method not in `methods`,
            or data that breaks the contract (a task the model lacks, a
            task without targets).
    """
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed (3 or more for an interval).")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds has duplicates: {seeds}.")
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    methods = [parse_method(m) for m in methods]
    if not methods:
        raise ValueError("methods is empty: name at least one weighting, e.g. ['equal'].")
    labels = [m.label for m in methods]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"Method labels must be distinct; repeated: {duplicates}.")
    unknown = [label for label in same_compute if label not in labels]
    if unknown:
        raise ValueError(f"same_compute names {unknown}, which are not among the methods {labels}.")
    say = progress or (lambda line: None)

    keras.utils.set_random_seed(seeds[0])
    first = data_factory(seeds[0])
    check_data(first)
    task_names = [t.name for t in first.tasks]
    for method in methods:
        method.check(task_names)
    delta_metrics = _delta_metrics(first)
    fingerprint = _fingerprint(first, trunk, weights, steps, tag)
    input_shape = _input_shape(first)

    done = {}
    for row in read_results(results_path):
        if row.get("fingerprint") != fingerprint:
            continue
        if row["status"] != "ok" and retry_failed:
            continue
        done[_key(row["kind"], row["label"], row["seed"])] = row

    plan = [(SINGLE, name, seed) for seed in seeds for name in task_names]
    for method in methods:  # method-major: each finished method has all its seeds
        plan += [(MULTI, method.label, seed) for seed in seeds]
        if method.label in same_compute:
            plan += [(SAME_COMPUTE, method.label, seed) for seed in seeds]
    by_label = {m.label: m for m in methods}
    rows = []
    for index, (kind, label, seed) in enumerate(plan, 1):
        key = _key(kind, label, seed)
        if key in done:
            rows.append(done[key])
            continue
        run_steps = int(steps)
        if kind == SAME_COMPUTE:
            run_steps = _same_compute_steps(rows, label, seed, task_names, steps)
            if run_steps is None:
                say(f"[{index}/{len(plan)}] {label} [same compute] seed {seed}: skipped, its "
                    "multi-task run or a baseline of this seed is missing")
                continue
        row = {"fingerprint": fingerprint, "kind": kind, "label": label, "seed": seed,
               "steps": run_steps, "trunk": str(trunk), "input_shape": list(input_shape),
               "tag": tag, "delta_metrics": {t: list(m) for t, m in delta_metrics.items()}}
        start = time.perf_counter()
        try:
            keras.utils.set_random_seed(seed)
            data = first if (seed == seeds[0] and index == 1) else data_factory(seed)
            keras.utils.set_random_seed(seed)
            if kind == SINGLE:
                task = next(t for t in data.tasks if t.name == label)

                def build(task=task):
                    return build_single_task(_fresh(task), trunk=trunk, weights=weights,
                                             input_shape=input_shape)
                train, validation = (select_tasks(data.train, [label]),
                                     select_tasks(data.validation, [label]))
            else:
                method = by_label[label]

                def build(data=data, method=method):
                    return build_mtl([_fresh(t) for t in data.tasks], trunk=trunk,
                                     weights=weights, input_shape=input_shape,
                                     weighting=method.build_weighting(task_names),
                                     architecture=method.build_architecture())
                train, validation = data.train, data.validation
            metrics, seconds, cpu_seconds, trace, curve = _train_one(
                build, train, validation, run_steps, optimizer, jit_compile, data.class_names,
                f"{kind}_{label}", trunk_lr=1.0 if kind == SINGLE else by_label[label].trunk_lr)
            row.update(status="ok", metrics=metrics, train_seconds=seconds,
                       train_cpu_seconds=cpu_seconds, cpu_count=os.cpu_count(),
                       loss_curve=curve)
            if kind != SINGLE:
                row["weights_trace"] = trace  # the task weights at 9 steps of the run
        except Exception as error:  # recorded, and the sweep goes on
            row.update(status="failed", error=f"{type(error).__name__}: {error}",
                       traceback=traceback.format_exc(limit=8)[-4000:],
                       train_seconds=time.perf_counter() - start)
        row["finished_at"] = datetime.datetime.now().isoformat(timespec="seconds")
        _append(results_path, row)
        rows.append(row)
        _clear()
        say(f"[{index}/{len(plan)}] " + _progress_line(row, rows, task_names, delta_metrics))
    return Leaderboard(rows=rows, tasks=task_names, delta_metrics=delta_metrics, seeds=seeds,
                       labels=labels, steps=int(steps), confidence=confidence)


def _same_compute_steps(rows, label, seed, task_names, steps):
    """Steps that fill the summed single-task time at the method's step time.

    Times come from the fastest finished run of each single task and of the
    method, in seconds per step over all seeds: a run that shared the machine
    with other work is slower, and the fastest is the nearest to the
    machine's real cost (as `timeit` takes the minimum). Every seed thus gets
    the same step count. `None` until the seed's baselines and one run of the
    method have finished.
    """
    def fastest(kind, name):
        times = [r["train_seconds"] / max(1, r["steps"]) for r in rows
                 if r["kind"] == kind and r["label"] == name and r["status"] == "ok"
                 and r["train_seconds"] > 0]
        return min(times, default=None)

    seed_has_baselines = all(any(r["kind"] == SINGLE and r["label"] == t and r["seed"] == seed
                                 and r["status"] == "ok" for r in rows) for t in task_names)
    multi = fastest(MULTI, label)
    if not seed_has_baselines or multi is None:
        return None
    total = sum(fastest(SINGLE, t) for t in task_names)  # seconds per step of each task, summed
    return max(1, int(round(steps * total / multi)))


def _progress_line(row, rows, task_names, delta_metrics):
    name = row["label"] if row["kind"] != SAME_COMPUTE else f"{row['label']} [same compute]"
    kind = "single-task" if row["kind"] == SINGLE else "method"
    head = f"{kind} {name} seed {row['seed']} ({row['steps']} steps, {row['train_seconds']:.0f} s)"
    if row["status"] != "ok":
        return f"{head}: FAILED {row['error']}"
    shown = ", ".join(f"{t} {m} {row['metrics'][t][m]:.3f}" for t, ms in delta_metrics.items()
                      for m in ms if t in row["metrics"])
    if row["kind"] == SINGLE:
        return f"{head}: {shown}"
    base = {r["label"]: r["metrics"] for r in rows if r["kind"] == SINGLE
            and r["seed"] == row["seed"] and r["status"] == "ok"}
    if all(t in base for t in task_names):
        try:
            gains = delta_m_per_task(
                {t: {m: row["metrics"][t][m] for m in ms} for t, ms in delta_metrics.items()},
                {t: {m: base[t][t][m] for m in ms} for t, ms in delta_metrics.items()})
            delta = sum(g["delta"] for g in gains.values()) / len(gains)
            return f"{head}: delta-m {delta:+.2f}% ({shown})"
        except ValueError:
            pass
    return f"{head}: {shown}"


def leaderboard_from_file(results_path, methods=None, seeds=None, fingerprint=None):
    """A `Leaderboard` of the rows already in a results file (no training).

    Args:
        results_path: the JSONL file.
        methods: labels to show (default every multi-task label in the rows).
        seeds: seeds to keep (default all).
        fingerprint: which sweep (default the one of the last row).

    Returns:
        A `Leaderboard`.
    """
    rows = read_results(results_path)
    if not rows:
        raise ValueError(f"{results_path} has no results.")
    fingerprint = fingerprint or rows[-1]["fingerprint"]
    rows = [r for r in rows if r["fingerprint"] == fingerprint
            and (seeds is None or r["seed"] in seeds)]
    tasks = []
    for row in rows:
        if row["kind"] == SINGLE and row["label"] not in tasks:
            tasks.append(row["label"])
    ok = [r for r in rows if r["status"] == "ok" and r["kind"] != SINGLE]
    if not ok:
        raise ValueError(f"{results_path} has no finished multi-task run for sweep {fingerprint}.")
    stored = [r["delta_metrics"] for r in rows if r.get("delta_metrics")]
    if not stored:
        raise ValueError(f"{results_path} rows do not say which metrics enter delta-m.")
    delta_metrics = {t: tuple(m) for t, m in stored[-1].items()}
    labels = methods or list(dict.fromkeys(r["label"] for r in rows if r["kind"] == MULTI))
    return Leaderboard(rows=rows, tasks=tasks, delta_metrics=delta_metrics,
                       seeds=sorted({r["seed"] for r in rows}), labels=labels,
                       steps=int(rows[-1]["steps"]))



def write_report(leaderboard, output_dir, name="leaderboard", reference=None):
    """Writes `NAME.md` (the table), `NAME.json` (the summaries) and `NAME.png`.

    The Markdown is `Leaderboard.report_markdown` (with the final training
    losses where the rows have curves).

    `reference` names the method of the table's paired column
    (`Leaderboard.markdown`; default `"equal"` when it was run).

    Returns:
        The paths written, `{"markdown", "json", "png"}` (no PNG without
        matplotlib).
    """
    report = leaderboard.report_markdown(reference)  # a bad reference raises before any write
    os.makedirs(output_dir, exist_ok=True)
    paths = {"markdown": os.path.join(output_dir, f"{name}.md"),
             "json": os.path.join(output_dir, f"{name}.json")}
    with open(paths["markdown"], "w") as file:
        file.write(report + "\n")
    with open(paths["json"], "w") as file:
        json.dump(leaderboard.to_dict(), file, indent=1, default=float)
    from keras_mtl.plotting import plot_leaderboard

    try:
        paths["png"] = plot_leaderboard(leaderboard, os.path.join(output_dir, f"{name}.png"))
    except ImportError:  # matplotlib is an optional extra, imported when drawing
        pass
    return paths
