"""benchmarks/weighting_costs.py (the README's method table) and benchmarks/bilevel_cost.py."""

import json
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmarks import weighting_costs  # noqa: E402


def _run_json(path, methods, git="abc1234"):
    data = {
        "meta": {"cpu_count": 2, "cpu_model": "test CPU", "tensorflow": "2.x", "keras": "3.x",
                 "date": "2026-11-27T17:00:00", "git": git, "loadavg_start": [3.0, 2.0, 1.0],
                 "loadavg_end": [5.0, 4.0, 3.0]},
        "settings": {"trunk": "tiny_resnet", "image_size": 64, "batch_size": 16, "warmup": 1,
                     "repeats": 4, "steps": 2},
        "seconds": 600.0,
        "parts": {"weighting": {"tasks": ["label", "objects", "mask"], "num_tasks": 3,
                                "equal_first_call_s": 10.0, "methods": methods}},
    }
    with open(path, "w") as file:
        json.dump(data, file)
    return str(path)


def _timed(name, kind, ratio):
    return {"name": name, "kind": kind, "step_ratio": 2 * ratio, "median_step_s": 0.2 * ratio,
            "equal_median_step_s": 0.1, "cpu_ratio": ratio, "median_cpu_s": 0.1 * ratio,
            "equal_median_cpu_s": 0.1}


def test_merged_table_has_every_registered_weighting_and_issue_21_goals(tmp_path):
    from keras_mtl import weighting

    first = _run_json(tmp_path / "A.json", {
        "equal (control)": _timed("equal", "loss", 1.01),
        "famo": _timed("famo", "loss", 1.07),
        "mgda (rep_grad)": _timed("mgda", "rep_grad", 1.1),
        "mgda (full grads)": _timed("mgda", "full", 1.7),
    })
    second = _run_json(tmp_path / "B.json", {
        "pcgrad (rep_grad)": {"refused": "ValueError: no"},
        "pcgrad (full grads)": _timed("pcgrad", "full", 1.5),
        "upgrad (full grads)": {"error": "RuntimeError: boom"},
    })
    out_json, out_md = tmp_path / "costs.json", tmp_path / "costs.md"
    weighting_costs.main([first, second, "--json", str(out_json), "--md", str(out_md)])

    saved = json.loads(out_json.read_text())
    assert [row["name"] for row in saved["weightings"]] == weighting.names()
    assert set(weighting.names()) <= set(weighting_costs.PAPERS)
    md = out_md.read_text()
    assert "| `equal` | loss | 1.01x |  | 2.02x |  | 101 vs 100 | yes | A.json |" in md
    assert "| `famo` | loss | 1.07x |  | 2.14x |  | 107 vs 100 | no | A.json |" in md
    assert ("| `mgda` | gradient | 1.10x | 1.70x | 2.20x | 3.40x | 110 vs 100; 170 vs 100 | "
            "yes / no | A.json |") in md
    assert "| `pcgrad` | gradient | n/a | 1.50x | n/a | 3.00x | 150 vs 100 | - / yes | B.json |" in md
    # A setting the weighting refuses is "n/a" even when never run (UPGrad refuses rep_grad);
    # one it accepts but no run timed is "not run".
    assert "| `upgrad` | gradient | n/a | error |" in md
    assert "| `auto` | gradient | not run | not run |" in md
    assert "| `dwa` | loss | not run |" in md
    assert "load average 2.0 to 5.0" not in md and "3.0 to 5.0" in md
    assert ("Goals met (CPU-time ratios): loss-based (<= 1.05x): 1 of 2 meet the goal; missed by "
            "`famo` 1.07x; gradient-based with rep_grad (<= 1.2x): 1 of 1 meet the goal; full "
            "parameter gradients (<= 1.6x): 1 of 2 meet the goal; missed by `mgda` 1.70x.") in md

    table = weighting_costs.readme_table(weighting_costs.rows(
        weighting_costs.load([first, second])[1]))
    assert "| `pcgrad` | Yu et al., NeurIPS 2020 | gradient | no | 1.50x full |" in table
    assert "| `mgda` | Sener, Koltun, NeurIPS 2018 | gradient | yes | 1.10x rep_grad, 1.70x full |" \
        in table


@pytest.mark.slow
def test_bilevel_cost_runs_and_the_auto_lambda_sides_cost_more(tmp_path):
    from benchmarks import bilevel_cost

    result = bilevel_cost.main(["--size", "32", "--batch", "2", "--trunk", "micro_resnet",
                                "--warmup", "0", "--repeats", "1", "--steps", "1",
                                "--json", str(tmp_path / "b.json")])
    ratios = result["ratio_to_equal"]
    assert set(ratios) == {"fit_equal", "equal", "auto_lambda", "auto_lambda_lagged"}
    assert ratios["equal"] == 1.0
    assert ratios["auto_lambda"] > 1.0
    lam = result["meta_weights_after"]
    assert len(lam) == 3 and all(abs(x - 0.1) < 0.01 for x in lam)  # Adam lr 1e-4, few steps


def test_cpu_clock_groups_the_timed_calls_into_blocks():
    from benchmarks import timing
    from benchmarks.bench_weighting import CpuClock

    clocks = {"a": CpuClock(lambda: sum(range(20000))), "b": CpuClock(lambda: None)}
    times = timing.interleaved_times(clocks, warmup=2, repeats=3, steps=2)
    for clock in clocks.values():
        assert len(clock.calls) == 2 + 3 * 2
        blocks = clock.blocks(2, 2)
        assert len(blocks) == len(times["a"]) == 3 and all(b >= 0.0 for b in blocks)
        assert blocks[0] == (clock.calls[2] + clock.calls[3]) / 2


def test_a_ratio_that_rounds_onto_its_goal_shows_three_decimals():
    assert weighting_costs.format_ratio(1.2041, 1.2) == "1.204x"
    assert weighting_costs.format_ratio(1.1962, 1.2) == "1.196x"
    assert weighting_costs.format_ratio(1.2, 1.2) == "1.20x"
    assert weighting_costs.format_ratio(1.234, 1.2) == "1.23x"
