"""The multi-seed leaderboard: statistics, methods, resume, failures, bad input, report."""

import dataclasses
import json
import math
import os

import keras
import pytest
import tensorflow as tf

import keras_mtl
from keras_mtl import cli
from keras_mtl.data import shapes
from keras_mtl.evaluation import leaderboard as lb
from keras_mtl.evaluation.confidence import (mean_confidence_interval, standard_deviation,
                                             student_t_quantile)
from keras_mtl.evaluation.methods import Method, parse_method
from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting import LossWeighting


# --- statistics ------------------------------------------------------------------------
@pytest.mark.parametrize("dof, quantile", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764),
                                           (10, 2.2281), (30, 2.0423)])
def test_student_t_quantile_matches_the_printed_tables(dof, quantile):
    assert student_t_quantile(0.975, dof) == pytest.approx(quantile, abs=1e-4)
    assert student_t_quantile(0.025, dof) == pytest.approx(-quantile, abs=1e-4)


def test_student_t_quantile_one_sided_and_bad_arguments():
    assert student_t_quantile(0.95, 5) == pytest.approx(2.0150, abs=1e-4)
    assert student_t_quantile(0.5, 3) == 0.0
    with pytest.raises(ValueError, match="probability"):
        student_t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="dof"):
        student_t_quantile(0.9, 0)


def test_confidence_interval_of_a_hand_worked_case():
    # Deltas 1, 2, 3: mean 2, s = 1, half width t(0.975, 2) * 1 / sqrt(3) = 4.302653 / 1.732051.
    mean, low, high = mean_confidence_interval([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0)
    assert high - mean == pytest.approx(4.302653 / math.sqrt(3.0), abs=1e-5)
    assert mean - low == pytest.approx(high - mean)
    assert standard_deviation([1.0, 2.0, 3.0]) == pytest.approx(1.0)
    one = mean_confidence_interval([5.0])
    assert one[0] == 5.0 and math.isnan(one[1]) and math.isnan(one[2])
    assert mean_confidence_interval([1.0, float("nan"), 3.0])[0] == pytest.approx(2.0)


# --- methods ---------------------------------------------------------------------------
def test_parse_method_strings():
    method = parse_method("famo:learning_rate=0.01,rep_grad")
    assert (method.weighting, method.options, method.architecture) == (
        "famo", {"learning_rate": 0.01, "rep_grad": True}, "hps")
    assert parse_method("equal@mtan").architecture == "mtan"
    assert parse_method("imtl:rep_grad").build_weighting(["a", "b"]).rep_grad
    whole_run = parse_method("calibrated:calibration_steps=none")
    assert whole_run.options == {"calibration_steps": None}
    assert whole_run.build_weighting(["a", "b"]).calibration_steps is None
    branched = parse_method("calibrated:rep_grad@branched:branch_at=P5,private=person")
    assert (branched.weighting, branched.options, branched.architecture) == (
        "calibrated", {"rep_grad": True}, "branched")
    assert branched.architecture_options == {"branch_at": "P5", "private": "person"}
    architecture = branched.build_architecture()
    assert (architecture.branch_at, architecture.private) == ("P5", ["person"])
    with pytest.raises(ValueError, match="non-empty"):
        parse_method("  ")


def test_trunk_lr_option_is_the_methods_not_the_weightings():
    method = parse_method("calibrated:rep_grad,trunk_lr=1.5")
    assert method.trunk_lr == 1.5 and method.options == {"rep_grad": True}
    assert parse_method("equal").trunk_lr == 1.0
    with pytest.raises(ValueError, match="equal:trunk_lr=fast.*must be a number"):
        parse_method("equal:trunk_lr=fast")
    with pytest.raises(ValueError, match="'slow'.*trunk_lr must be > 0"):
        Method(label="slow", trunk_lr=0.0).check(["a", "b"])


def test_static_method_fills_unnamed_tasks_with_one_and_rejects_unknown_tasks():
    weighting = parse_method("static:person=8").build_weighting(["campus", "person"])
    assert weighting.get_config()["weights"] == {"campus": 1.0, "person": 8.0}
    with pytest.raises(ValueError, match="static:ghost=2.*ghost"):
        parse_method("static:ghost=2").check(["campus", "person"])


@pytest.mark.parametrize("spec, message", [
    ("no_such_weighting", "no_such_weighting.*Valid names"),
    ("nash_mtl:rep_grad", "nash_mtl:rep_grad.*rep_grad"),
    ("equal@no_such_architecture", "no_such_architecture"),
    ("equal@branched:branch_at=P2", "equal@branched:branch_at=P2.*branch_at must be one of"),
])
def test_unusable_methods_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_method(spec).check(["a", "b"])


# --- summaries from hand-made rows -----------------------------------------------------
def _row(kind, label, seed, metrics, seconds=10.0, status="ok"):
    return {"fingerprint": "f", "kind": kind, "label": label, "seed": seed, "steps": 5,
            "status": status, "metrics": metrics, "train_seconds": seconds,
            "delta_metrics": {"a": ["accuracy"], "b": ["miou"]}}


def _hand_rows():
    rows = []
    for seed in (0, 1, 2):  # baselines: a accuracy 0.5, b miou 0.5, 10 s each
        rows.append(_row("single", "a", seed, {"a": {"accuracy": 0.5}}))
        rows.append(_row("single", "b", seed, {"b": {"miou": 0.5}}))
    # "up": a +2 %, +4 %, +6 % and b 0 % -> delta-m 1, 2, 3; 10 s against 20 s: ratio 0.5.
    for seed, a in zip((0, 1, 2), (0.51, 0.52, 0.53)):
        rows.append(_row("multi", "up", seed, {"a": {"accuracy": a}, "b": {"miou": 0.5}}))
    rows.append(_row("multi", "down", 0, {"a": {"accuracy": 0.4}, "b": {"miou": 0.5}}))
    rows.append({**_row("multi", "down", 1, {}), "status": "failed", "error": "ValueError: x"})
    return rows


def _board(rows):
    return lb.Leaderboard(rows=rows, tasks=["a", "b"],
                          delta_metrics={"a": ("accuracy",), "b": ("miou",)}, seeds=[0, 1, 2],
                          labels=["up", "down"], steps=5)


def test_summary_of_hand_made_rows():
    board = _board(_hand_rows())
    up = board.summary("up")
    assert up.delta_m == pytest.approx([1.0, 2.0, 3.0])
    assert up.delta_m_mean == pytest.approx(2.0)
    assert up.delta_m_high - 2.0 == pytest.approx(4.302653 / math.sqrt(3.0), abs=1e-5)
    assert up.per_task_delta == pytest.approx({"a": 4.0, "b": 0.0})
    assert up.time_ratio == pytest.approx(0.5)
    assert up.metrics["a"]["accuracy"][0] == pytest.approx(0.52)
    down = board.summary("down")
    assert down.delta_m == pytest.approx([-10.0]) and down.failed == [1]
    assert "ValueError: x" in down.errors[0]
    assert [s.label for s in board.summaries()] == ["up", "down"]
    table = board.markdown()
    assert "| 1 | `up` | +2.00 [-0.48, +4.48] | +4.00 | +0.00 |" in table
    assert "`down` | -10.00 |" in table and "1 (1 failed)" in table
    assert "single-task baselines" in table and "0.500 +- 0.000" in table


def test_same_compute_steps_fill_the_summed_single_task_time():
    rows = _hand_rows()  # up: 10 s for 5 steps; baselines of seed 0: 20 s in all
    assert lb._same_compute_steps(rows, "up", 0, ["a", "b"], 5) == 10
    assert lb._same_compute_steps(rows, "up", 7, ["a", "b"], 5) is None  # no baselines
    assert lb._same_compute_steps(rows, "missing", 0, ["a", "b"], 5) is None  # no method run


def test_same_compute_steps_take_the_fastest_run_of_each():
    rows = _hand_rows()
    for row in rows:  # seed 1 shared the machine: its runs took three times as long
        if row["seed"] == 1:
            row["train_seconds"] *= 3.0
    rows[0] = {**rows[0], "train_seconds": 5.0}  # seed 0's `a`: 1 s per step
    # a: 1 s/step (fastest), b: 2 s/step, up: 2 s/step -> 5 * (1 + 2) / 2 = 7.5 -> 8 steps
    for seed in (0, 1, 2):
        assert lb._same_compute_steps(rows, "up", seed, ["a", "b"], 5) == 8


def test_report_from_file_and_plot(tmp_path, capsys):
    path = tmp_path / "results.jsonl"
    with open(path, "w") as file:
        for row in _hand_rows():
            file.write(json.dumps(row) + "\n")
        file.write('{"torn": ')  # a write cut off by a kill is skipped
    board = lb.leaderboard_from_file(str(path))
    assert board.tasks == ["a", "b"] and board.labels == ["up", "down"]
    assert board.summary("up").delta_m_mean == pytest.approx(2.0)
    paths = lb.write_report(board, str(tmp_path), "board")
    assert open(paths["markdown"]).read().strip() == board.markdown()
    assert json.load(open(paths["json"]))["methods"][0]["label"] == "up"
    assert os.path.getsize(paths["png"]) > 1000
    assert cli.main(["compare", "--results", str(path), "--report-only"]) == 0
    assert "| 1 | `up` |" in capsys.readouterr().out
    # The paired column against another method: up - down on seed 0 is 1 - (-10) = 11.
    assert cli.main(["compare", "--results", str(path), "--report-only",
                     "--paired-with", "down"]) == 0
    out = capsys.readouterr().out
    assert "vs `down` (paired)" in out and "| 1 | `up` | +2.00 [-0.48, +4.48] | +11.00 |" in out
    assert "vs `down` (paired)" in open(tmp_path / "results.md").read()
    assert cli.main(["compare", "--results", str(path), "--report-only",
                     "--paired-with", "nope"]) == 1
    assert ("--paired-with: the paired column's method 'nope' is not among the methods"
            in capsys.readouterr().err)
    with pytest.raises(ValueError, match="'nope' is not among the methods"):
        board.markdown(reference="nope")  # not a silent column of blanks
    assert "vs `down` (paired)" in open(tmp_path / "results.md").read()  # the report is kept


# --- the sweep, for real (tiny) ----------------------------------------------------------
@keras_serializable
class BrokenWeighting(LossWeighting):
    """A weighting that breaks when the train step is traced."""

    def compute_weights(self, losses, present, training):
        raise RuntimeError("this weighting is broken on purpose")


def _tiny_factory(calls=None):
    def factory(seed):
        if calls is not None:
            calls.append(seed)
        tasks = shapes.make_tasks(with_detection=False)
        names = [t.name for t in tasks]
        train = shapes.make_dataset(8, image_size=32, batch_size=4, seed=seed, shuffle=True,
                                    repeat=True, drop_remainder=True, tasks=names)
        val = shapes.make_dataset(4, image_size=32, batch_size=4, seed=99, tasks=names)
        return lb.LeaderboardData(tasks=tasks, train=train, validation=val, name="tiny")
    return factory


def _sgd(made):
    """An optimizer factory that records the step budgets it is given. Plain SGD: the
    default AdamW traces ~4x slower on CPU, and the sweep's bookkeeping is the point here."""
    def factory(total_steps):
        made.append(total_steps)
        return keras.optimizers.SGD(0.01)
    return factory


def test_fingerprint_ignores_an_option_added_later_at_its_default():
    from keras_mtl.tasks import Segmentation

    data = _tiny_factory()(0)

    def fingerprint(**options):
        tasks = [Segmentation("mask", 3, **options)]
        return lb._fingerprint(dataclasses.replace(data, tasks=tasks), "micro_resnet", None, 2, "")

    # Sweeps begun before `head_convs` existed (their head had none) keep their
    # fingerprint, and so resume; the default head since then is another sweep.
    assert "head_convs" not in lb._task_description(Segmentation("mask", 3, head_convs=0))
    assert lb._task_description(Segmentation("mask", 3))["head_convs"] == 2
    assert fingerprint(head_convs=0) != fingerprint() == fingerprint(head_convs=2)
    assert fingerprint(dice_weight=1.0) != fingerprint()


def test_sweep_records_failures_appends_rows_and_resumes_without_training(tmp_path, monkeypatch):
    path = str(tmp_path / "sweep.jsonl")
    methods = ["equal", Method(label="broken", weighting=BrokenWeighting())]
    lines, made = [], []
    board = lb.run_leaderboard(_tiny_factory(), methods, seeds=[0], steps=2, results_path=path,
                               trunk="micro_resnet", progress=lines.append, optimizer=_sgd(made))
    assert made == [2, 2, 2, 2]  # the given optimizer, with the budget, in every run
    rows = lb.read_results(path)
    assert [(r["kind"], r["label"], r["status"]) for r in rows] == [
        ("single", "label", "ok"), ("single", "mask", "ok"), ("multi", "equal", "ok"),
        ("multi", "broken", "failed")]
    assert "broken on purpose" in rows[-1]["error"]
    assert len(lines) == 4 and "FAILED" in lines[-1] and "delta-m" in lines[2]
    equal = board.summary("equal")
    assert equal.seeds == [0] and math.isfinite(equal.time_ratio)
    assert set(rows[2]["metrics"]) == {"label", "mask"}
    # Every finished run records its CPU time (every thread) and the machine's cores.
    assert all(r["train_cpu_seconds"] > 0 and r["cpu_count"] == os.cpu_count()
               for r in rows[:3])
    # A multi-task row keeps the weights its method used (equal: 1 at both steps).
    assert rows[2]["weights_trace"] == [[1, {"label": 1.0, "mask": 1.0}],
                                        [2, {"label": 1.0, "mask": 1.0}]]
    assert "weights_trace" not in rows[0]
    # Every finished run keeps its per-task training-loss curve (TaskLossCurve), baselines too.
    assert [[step, sorted(losses)] for step, losses in rows[0]["loss_curve"]] == [
        [1, ["label"]], [2, ["label"]]]
    assert [[step, sorted(losses)] for step, losses in rows[2]["loss_curve"]] == [
        [1, ["label", "mask"]], [2, ["label", "mask"]]]
    assert all(math.isfinite(loss) for _, losses in rows[2]["loss_curve"] for loss in losses.values())
    table = board.markdown()
    # The report's Markdown adds the final training loss per task against single-task.
    report = lb.write_report(board, str(tmp_path), "sweep")["markdown"]
    with open(report) as file:
        assert "| `equal` | " in file.read().split("Final training loss")[1]

    trained = []

    def no_training(*args, **kwargs):
        trained.append(args[-1])
        raise RuntimeError("a finished run was trained again")

    monkeypatch.setattr(lb, "_train_one", no_training)
    again = lb.run_leaderboard(_tiny_factory(), methods, seeds=[0], steps=2, results_path=path,
                               trunk="micro_resnet", progress=None)
    assert trained == [] and again.markdown() == table
    assert len(lb.read_results(path)) == 4
    # retry_failed trains the failed run again, and only it.
    lb.run_leaderboard(_tiny_factory(), methods, seeds=[0], steps=2, results_path=path,
                       trunk="micro_resnet", progress=None, retry_failed=True)
    assert trained == ["multi_broken"]
    trained.clear()
    # Another budget is another sweep: nothing of the file is reused.
    lb.run_leaderboard(_tiny_factory(), ["equal"], seeds=[0], steps=3, results_path=path,
                       trunk="micro_resnet", progress=None)
    assert trained == ["single_label", "single_mask", "multi_equal"]


def test_a_methods_trunk_lr_reaches_its_runs_and_not_the_baselines(tmp_path, monkeypatch):
    given = {}

    def record(*args, trunk_lr=1.0):
        given[args[-1]] = trunk_lr
        raise RuntimeError("not trained here")

    monkeypatch.setattr(lb, "_train_one", record)
    lb.run_leaderboard(_tiny_factory(), ["equal:trunk_lr=2"], seeds=[0], steps=1,
                       results_path=str(tmp_path / "sweep.jsonl"), progress=None)
    assert given == {"single_label": 1.0, "single_mask": 1.0, "multi_equal:trunk_lr=2": 2.0}


def test_train_and_evaluate_gives_the_trunk_its_own_learning_rate():
    from keras_mtl.evaluation.compare import train_and_evaluate

    data = _tiny_factory()(0)
    model = keras_mtl.build_mtl(data.tasks, trunk="micro_resnet",
                                weights=None, input_shape=(32, 32, 3))
    train_and_evaluate(model, data.train, None, steps_per_epoch=1, trunk_lr=2.5,
                       optimizer=lambda steps: keras.optimizers.SGD(0.01))
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)
    assert float(model.trunk_optimizer.learning_rate) == pytest.approx(0.025)


def test_bad_input_is_refused_before_any_training(tmp_path):
    path = str(tmp_path / "x.jsonl")
    with pytest.raises(ValueError, match="seeds is empty"):
        lb.run_leaderboard(_tiny_factory(), ["equal"], seeds=[], steps=1, results_path=path)
    with pytest.raises(ValueError, match="methods is empty"):
        lb.run_leaderboard(_tiny_factory(), [], seeds=[0], steps=1, results_path=path)
    with pytest.raises(ValueError, match="repeated.*equal"):
        lb.run_leaderboard(_tiny_factory(), ["equal", "equal"], seeds=[0], steps=1,
                           results_path=path)
    with pytest.raises(ValueError, match="same_compute.*famo"):
        lb.run_leaderboard(_tiny_factory(), ["equal"], seeds=[0], steps=1, results_path=path,
                           same_compute=["famo"])
    with pytest.raises(ValueError, match="Method 'bogus'"):
        lb.run_leaderboard(_tiny_factory(), ["equal", "bogus"], seeds=[0], steps=1,
                           results_path=path)

    def extra_task(seed):
        data = _tiny_factory()(seed)
        data.tasks = [t for t in data.tasks if t.name != "mask"]  # the data still has "mask"
        return data

    with pytest.raises(ValueError, match=r"\['mask'\] that the model lacks"):
        lb.run_leaderboard(extra_task, ["equal"], seeds=[0], steps=1, results_path=path)

    def untrained_task(seed):
        data = _tiny_factory()(seed)
        data.train = data.train.map(lambda images, targets: (images, {"label": targets["label"]}))
        return data

    with pytest.raises(ValueError, match=r"\['mask'\] have no targets in the training data"):
        lb.run_leaderboard(untrained_task, ["equal"], seeds=[0], steps=1, results_path=path)
    with pytest.raises(ValueError, match="LeaderboardData"):
        lb.run_leaderboard(lambda seed: (1, 2), ["equal"], seeds=[0], steps=1, results_path=path)
    assert not os.path.exists(path)


def test_same_seed_gives_the_same_batches():
    first = next(iter(_tiny_factory()(3).train))
    second = next(iter(_tiny_factory()(3).train))
    assert bool(tf.reduce_all(first[0] == second[0]))


def test_cli_compare_errors(capsys, tmp_path):
    assert cli.main(["compare", "--data", "no_such_module_xyz:make",
                     "--results", str(tmp_path / "r.jsonl")]) == 1
    assert "cannot import 'no_such_module_xyz'" in capsys.readouterr().err
    assert cli.main(["compare", "--results", str(tmp_path / "none.jsonl"), "--report-only"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["compare", "--methods", "bogus", "--results",
                     str(tmp_path / "r.jsonl")]) == 1
    assert "Method 'bogus'" in capsys.readouterr().err
    for flags, message in (
            (["--data", "tests.helpers:none", "--segmentation-head-convs", "2"],
             "applies to --data shapes and pennfudan only"),
            (["--segmentation-head-convs", "-1"], "--segmentation-head-convs must be >= 0, got -1")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["compare", *flags, "--results", str(tmp_path / "r.jsonl")])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_cli_compare_gives_the_shapes_mask_head_its_convolutions(tmp_path):
    from keras_mtl import cli_compare

    parser = cli.build_parser()
    for flag, expected in ((["--segmentation-head-convs", "0"], 0), ([], 2)):
        args = parser.parse_args(["compare", "--image-size", "32", *flag])
        settings = cli_compare._settings(args)
        factory = cli_compare._factory(settings, args, parser.command_parsers["compare"],
                                       ValueError)
        mask = [task for task in factory(0).tasks if task.name == "mask"]
        assert [task.head_convs for task in mask] == [expected]


def test_paired_difference_against_a_reference_method():
    rows = _hand_rows()
    for seed, a in zip((0, 1, 2), (0.50, 0.51, 0.50)):  # delta-m 0, 1, 0
        rows.append(_row("multi", "equal", seed, {"a": {"accuracy": a}, "b": {"miou": 0.5}}))
    board = lb.Leaderboard(rows=rows, tasks=["a", "b"],
                           delta_metrics={"a": ("accuracy",), "b": ("miou",)}, seeds=[0, 1, 2],
                           labels=["up", "down", "equal"], steps=5)
    # Differences 1, 1, 3: mean 5/3, s = sqrt(4/3), half width 4.302653 * s / sqrt(3).
    mean, low, high, count = board.paired_difference("up", "equal")
    assert count == 3 and mean == pytest.approx(5.0 / 3.0)
    assert high - mean == pytest.approx(4.302653 * math.sqrt(4.0 / 3.0) / math.sqrt(3.0), abs=1e-5)
    table = board.markdown()
    assert "vs `equal` (paired)" in table
    assert f"| `up` | +2.00 [-0.48, +4.48] | +1.67 [{low:+.2f}, {high:+.2f}] |" in table
    assert board.paired_difference("down", "equal")[3] == 1  # one seed in common
