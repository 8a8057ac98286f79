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


def test_many_tasks_configurations_resume_and_table(tmp_path):
    """benchmarks/many_tasks.py: which rows it runs, what it skips, the table (no model)."""
    from benchmarks import many_tasks

    args = many_tasks.main.__globals__["argparse"].Namespace(
        tasks=[2, 8], methods=["mgda", "pcgrad", "graddrop"], update_every=[10],
        jacobian=["loop", "vectorized"], trunk="micro_resnet", size=32, batch=8,
        jit_compile=False, warmup=1, repeats=1, steps=1, task_chunk=[4], row=[])
    configs = list(many_tasks.configurations(args))
    labels = {(c["tasks"], c["method"], c["variant"], c["update_every"], c["jacobian"])
              for c in configs}
    assert (8, "mgda", "rep_grad", 10, "vectorized") in labels
    assert (8, "pcgrad", "params", 10, "loop") in labels
    assert not any(m == "pcgrad" and v == "rep_grad" for _, m, v, _, _ in labels)  # refused
    assert not any(m == "graddrop" and k > 1 for _, m, _, k, _ in labels)  # not a Gramian method
    assert (8, "mgda", "params", 1, "chunk 4") in labels  # chunks: update_every=1, c < T
    assert not any(j.startswith("chunk") for t, _, _, k, j in labels if k > 1 or t == 2)
    only = type(args)(**dict(vars(args), tasks=[8], row=["mgda,rep_grad,1,chunk 4"]))
    chosen = list(many_tasks.configurations(only))
    assert [(c["method"], c["variant"], c["jacobian"]) for c in chosen] == [
        ("equal", "-", "-"), ("mgda", "rep_grad", "chunk 4")]
    rows = [dict(c, step_s=0.01 * (i + 1), peak_growth_mb=10.0 + i, device="CPU x2")
            for i, c in enumerate(configs[:3])]
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = {many_tasks.key_of(r) for r in many_tasks.read_rows(str(path))}
    assert many_tasks.key_of(configs[1]) in done and many_tasks.key_of(configs[5]) not in done
    many_tasks.write_table(many_tasks.read_rows(str(path)), str(tmp_path / "many.md"))
    table = (tmp_path / "many.md").read_text()
    assert "| 2 | equal |" in table and "2.00x" in table  # 0.02 s against equal's 0.01 s


def test_leaderboard_script_imports_the_package_of_its_own_checkout(tmp_path):
    # A sweep run from a snapshot (git worktree) must train the snapshot's code, even when
    # another checkout is installed in editable mode.
    import shutil
    import subprocess

    (tmp_path / "benchmarks").mkdir()
    shutil.copy(os.path.join(REPO, "benchmarks", "leaderboard.py"), tmp_path / "benchmarks")
    (tmp_path / "keras_mtl").mkdir()
    (tmp_path / "keras_mtl" / "__init__.py").write_text("WHERE = 'snapshot'\n")
    script = (f"import runpy; runpy.run_path({str(tmp_path / 'benchmarks' / 'leaderboard.py')!r}); "
              "import keras_mtl; print(keras_mtl.WHERE)")
    elsewhere = tmp_path / "elsewhere"  # not the snapshot: `python -c` puts the cwd on sys.path
    elsewhere.mkdir()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=elsewhere, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "snapshot"
