"""benchmarks/: the timing helpers, and one cheap part run end to end in-process."""

import json
import os
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmarks import common, run, timing  # noqa: E402


def test_interleaved_times_alternate_order_and_pair_ratios():
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = timing.interleaved_times(fns, warmup=1, repeats=4, steps=2)
    assert [len(times["a"]), len(times["b"])] == [4, 4]
    # warm-up a, b; then blocks a a b b | b b a a | a a b b | b b a a
    assert "".join(calls) == "ab" + "aabb" + "bbaa" + "aabb" + "bbaa"
    assert timing.paired_ratio([2.0, 4.0, 6.0], [1.0, 1.0, 2.0]) == 3.0
    with pytest.raises(ValueError):
        timing.paired_ratio([1.0], [])


def test_median_step_time_excludes_warmup():
    calls = []

    def fn():
        time.sleep(0.05 if not calls else 0.0)  # a slow first call, like tracing
        calls.append(1)

    assert timing.median_step_time(fn, warmup=1, repeats=3, steps=2) < 0.02
    assert len(calls) == 1 + 3 * 2


def test_rss_sampler_sees_an_allocation():
    with timing.RssSampler(interval=0.001) as sampler:
        block = bytearray(40_000_000)
        block[::4096] = b"x" * len(block[::4096])  # touch every page
        time.sleep(0.01)
    assert sampler.peak_growth > 20_000_000


def test_rows_format_goal_and_status():
    assert common.Row("2", "k", "ratio", 1.02, "x", goal=("<=", 1.05)).status == "PASS"
    assert common.Row("2", "k", "ratio", 1.2, "x", goal=("<=", 1.05)).status == "MISS"
    assert common.Row("5", "k", "headroom", 2.0, "x", goal=(">=", 3.0)).status == "MISS"
    assert common.Row("5", "k", "headroom", None, "x", goal=(">=", 3.0)).status == "n/a"
    row = common.Row("6", "k", "latency", 3.456, "ms")
    assert (row.status, row.formatted_value(), row.formatted_goal()) == ("-", "3.46 ms", "")
    assert common.Row("2", "k", "r", 1.0, "x", goal=("<=", 1.05)).formatted_goal() == "≤ 1.05x"


def test_only_accepts_names_and_numbers():
    assert run.parse_args(["--only", "6,keras,1"]).parts == ["single", "keras", "export"]
    assert run.parse_args([]).parts == list(run.PARTS)
    with pytest.raises(SystemExit):
        run.parse_args(["--only", "nonsense"])


def test_quick_keras_part_writes_json_and_markdown(tmp_path, capsys):
    path = tmp_path / "bench.json"
    results = run.run(["--quick", "--only", "keras", "--batch-size", "4", "--repeats", "2",
                       "--warmup", "0", "--json", str(path)])
    saved = json.loads(path.read_text())
    assert set(saved) >= {"meta", "settings", "rows", "parts", "markdown", "seconds"}
    meta = saved["meta"]
    assert meta["tensorflow"] and meta["keras"] and meta["device"] == "CPU"
    assert meta["cpu_count"] == os.cpu_count() and meta["cpu_affinity"] >= 1
    assert len(meta["loadavg_start"]) == 3
    (row,) = saved["rows"]
    assert row["key"] == "keras.step_ratio" and row["goal"] == ["<=", 1.05]
    assert row["value"] > 0 and row["status"] in ("PASS", "MISS")
    assert len(saved["parts"]["keras"]["block_times_s"]["keras_mtl"]) == 2
    out = capsys.readouterr().out
    assert out.strip() == results["markdown"].strip()
    assert "| # | measure | value | goal | status | detail |" in out
    assert f"TensorFlow {meta['tensorflow']}" in out and "device CPU" in out
    assert "| 2 | MultiTaskModel(static) / plain Keras `loss_weights`: step time |" in out
