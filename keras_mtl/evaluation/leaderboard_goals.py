"""Goals a leaderboard method is checked against: printed with the table, never asserted."""

import dataclasses
import math

from keras_mtl.evaluation.leaderboard import MULTI


@dataclasses.dataclass(frozen=True)
class GoalCheck:
    """One goal and what the leaderboard measured for it.

    `met` is `None` when the leaderboard cannot tell yet (too few seeds,
    a method to compare with that was not run).
    """

    goal: str
    met: object  # True, False or None
    measured: str

    @property
    def verdict(self):
        return {True: "met", False: "NOT met", None: "not yet known"}[self.met]


def check_goals(board, method, min_delta_m=2.0, min_seeds=3, worst_task_delta=-2.0,
                metric_floors=None, max_train_minutes=None, beat=()):
    """Checks one method of a `Leaderboard` against the goals of issue 17.

    Args:
        board: a `keras_mtl.evaluation.leaderboard.Leaderboard`.
        method: the label of the method to check (the default weighting).
        min_delta_m: the mean delta-m (percent) to reach, over at least
            `min_seeds` seeds, with the confidence interval's lower bound >= 0.
        worst_task_delta: no task's mean relative change (percent) below this.
        metric_floors: `{(task, metric): floor}` for the mean of a metric over
            the seeds (a metric that enters delta-m).
        max_train_minutes: the most minutes of training per run (the mean).
        beat: labels of methods whose delta-m the method must exceed (the
            mean of the per-seed differences, on the seeds both have, at
            least `min_seeds` of them).

    Returns:
        A list of `GoalCheck`.

    Example:

    >>> from keras_mtl.evaluation.leaderboard import Leaderboard
    >>> rows = [dict(kind=kind, label=label, seed=seed, status="ok", train_seconds=60.0,
    ...              metrics={"a": {"accuracy": value}})
    ...         for seed in (0, 1, 2) for kind, label, value in
    ...         (("single", "a", 0.50), ("multi", "auto", 0.52), ("multi", "equal", 0.49))]
    >>> board = Leaderboard(rows=rows, tasks=["a"], delta_metrics={"a": ("accuracy",)},
    ...                     seeds=[0, 1, 2], labels=["auto", "equal"], steps=10)
    >>> [check.verdict for check in check_goals(board, "auto", beat=["equal"])]
    ['met', 'met', 'met']
    """
    summary = board.summary(method)
    seeds = len(summary.seeds)
    checks = []
    interval = (f"{summary.delta_m_mean:+.2f}% [{summary.delta_m_low:+.2f}, "
                f"{summary.delta_m_high:+.2f}] over {seeds} seeds")
    if seeds < min_seeds or not math.isfinite(summary.delta_m_low):
        met = None if seeds < min_seeds else False
    else:
        met = summary.delta_m_mean >= min_delta_m and summary.delta_m_low >= 0.0
    checks.append(GoalCheck(
        f"delta-m >= {min_delta_m:+.2f}% over >= {min_seeds} seeds, 95% CI lower bound >= 0",
        met, interval if seeds else "no finished seed"))
    per_task = summary.per_task_delta
    worst = min(per_task, key=per_task.get) if per_task else None
    checks.append(GoalCheck(
        f"no task more than {-worst_task_delta:.0f}% below its single-task value",
        None if worst is None else per_task[worst] >= worst_task_delta,
        ", ".join(_task_change(task, value, *summary.per_task_interval[task])
                  for task, value in per_task.items()) or "no seed"))
    for (task, metric), floor in (metric_floors or {}).items():
        mean = summary.metrics.get(task, {}).get(metric, (math.nan,))[0]
        checks.append(GoalCheck(
            f"{task} {metric} >= {floor:.2f} (mean over seeds)",
            None if not math.isfinite(mean) else mean >= floor,
            f"{mean:.3f}" if math.isfinite(mean) else "not measured"))
    if max_train_minutes is not None:
        runs = [r for r in board.rows if r["kind"] == MULTI and r["label"] == method
                and r["status"] == "ok" and r["seed"] in summary.seeds]
        seconds = [r["train_seconds"] for r in runs]
        minutes = sum(seconds) / len(seconds) / 60.0 if seconds else math.nan
        checks.append(GoalCheck(
            f"<= {max_train_minutes:.0f} minutes of training per run (mean)",
            None if not seconds else minutes <= max_train_minutes,
            f"{minutes:.1f} min of wall time on the machine that ran it, other jobs included"
            + _cpu_time_note(runs) if seconds else "no run"))
    for other in beat:
        mean, low, high, n = (board.paired_difference(method, other)
                              if other in board.labels else (math.nan,) * 3 + (0,))
        checks.append(GoalCheck(
            f"beats `{other}` on delta-m (mean of the paired differences over >= {min_seeds} "
            "seeds)",
            None if n < min_seeds else mean > 0.0,
            f"{mean:+.2f} [{low:+.2f}, {high:+.2f}] over {n} seeds" if n else
            f"`{other}` has no seed in common"))
    return checks


def _cpu_time_note(runs):
    """`"; 52.3 CPU-min over 2 cores, so >= 26.1 min on 2 free cores (2 of 5 runs)"`, or `""`.

    `runs`: the method's finished rows. Rows written before CPU time was recorded have none
    and are left out. The process's CPU time is not inflated by other jobs as its wall time
    is, and CPU time over the cores is the least wall time the run could take with every
    core to itself: information beside the goal, which stays on wall time."""
    rows = [r for r in runs if r.get("train_cpu_seconds") and r.get("cpu_count")]
    if not rows:
        return ""
    cpu_minutes = sum(r["train_cpu_seconds"] for r in rows) / len(rows) / 60.0
    floor = sum(r["train_cpu_seconds"] / r["cpu_count"] for r in rows) / len(rows) / 60.0
    cores = sorted({r["cpu_count"] for r in rows})
    cores_text = "/".join(str(c) for c in cores)
    return (f"; {cpu_minutes:.1f} CPU-min over {cores_text} cores, so >= {floor:.1f} min on "
            f"{cores_text} free cores ({len(rows)} of {len(runs)} runs)")


def _task_change(task, mean, low, high):
    """`"person -3.5% [-9.6, +2.6]"`: a task's mean change and its interval when it has one."""
    bounds = f" [{low:+.1f}, {high:+.1f}]" if math.isfinite(low) and math.isfinite(high) else ""
    return f"{task} {mean:+.1f}%{bounds}"


def goals_markdown(method, checks):
    """The checks as a Markdown list under a heading naming the method."""
    lines = [f"Goals for `{method}` (issue 17; printed, not asserted):", ""]
    lines += [f"- {check.goal}: **{check.verdict}** ({check.measured})" for check in checks]
    return "\n".join(lines)
