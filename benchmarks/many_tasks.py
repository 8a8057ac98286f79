"""Many tasks (issue 20): step time and peak memory of gradient balancing at T = 2..64.

One binary attribute per task (`keras_mtl.data.attributes`, made on the
fly). Every configuration runs in its own subprocess (so peak memory is
its own): it builds the model, runs the first (tracing) call and the
warm-up, resets the kernel's peak-RSS counter (`/proc/self/clear_refs`),
times `--repeats` blocks of `--steps` train steps on one batch held in
memory (median seconds per step), and reads the peak growth
`VmHWM - VmRSS` over the timed steps from `/proc/self/status`. On a GPU
(`tf.config.experimental.get_memory_info`) the device's peak is read as
well. Ratios are to `equal` at the same T, from its own subprocess (not
interleaved: on a busy machine read them with their spread in mind).

Configurations: `equal`; each method (`--methods`) on parameter gradients
and, where it supports them, feature gradients (`rep_grad`); with
`update_every=1` and each `--update-every` k; per-task gradients by a loop
of `tape.gradient` calls or one vectorised `tape.jacobian` (`--jacobian`); Gramian methods
also with the per-task gradients a chunk of c tasks at a time (`--task-chunk c`,
`task_chunk_size=c`; `keras_mtl.training.task_chunks`).

Memory: the subprocess runs TensorFlow's BFC allocator on the CPU
(`TF_CPU_ALLOCATOR_USE_BFC=true`), whose peak over the timed steps
(`tf.config.experimental.get_memory_info`, tensors and variables) is the
row's `tf_peak_mb`; the RSS growth is kept as well.

Rows go to `benchmarks/results/many_tasks.jsonl` as each one finishes; a
rerun skips the rows already there (resumable), then rewrites the table
`benchmarks/results/many_tasks.md`.

```python
python -m benchmarks.many_tasks --tasks 2 8 --methods mgda pcgrad --size 32 --batch 8
python -m benchmarks.many_tasks --tasks 2 8 32 64  # the full sweep (hours on 2 cores)
python -m benchmarks.many_tasks --tasks 32 --size 32 --batch 8 --trunk micro_resnet \
    --row "mgda,rep_grad,1,loop" --row "mgda,rep_grad,1,chunk 8"  # chosen rows
```
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
JSONL = os.path.join(RESULTS, "many_tasks.jsonl")
TABLE = os.path.join(RESULTS, "many_tasks.md")
DEFAULT_METHODS = ("mgda", "upgrad", "imtl", "cagrad", "nash_mtl", "aligned_mtl", "pcgrad",
                   "gradvac", "gradnorm", "graddrop", "db_mtl")
KEY_FIELDS = ("tasks", "method", "variant", "update_every", "jacobian", "trunk", "image_size",
              "batch_size")


def _status_kb(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def run_one(config):
    """Measures one configuration in this process; returns the row (a dict)."""
    import keras_mtl.quiet  # noqa: F401  (TensorFlow without its start-up lines)

    import keras
    import tensorflow as tf

    import keras_mtl as mtl
    from keras_mtl.data import attributes
    from keras_mtl.training import gramian

    num_tasks, size, batch = config["tasks"], config["image_size"], config["batch_size"]
    gramian.VECTORIZE_FROM_TASKS = 1 if config["jacobian"] == "vectorized" else 2**31 - 1
    chunk = (int(config["jacobian"].split()[1]) if config["jacobian"].startswith("chunk")
             else None)
    keras.utils.set_random_seed(0)
    if config["method"] == "equal":
        weighting = "equal"
    else:
        kwargs = {"rep_grad": config["variant"] == "rep_grad"}
        if config["update_every"] > 1:
            kwargs["update_every"] = config["update_every"]
        if chunk is not None:
            kwargs["task_chunk_size"] = chunk
        weighting = mtl.weighting.get(config["method"], **kwargs)
    model = mtl.build_mtl(attributes.make_tasks(num_tasks), trunk=config["trunk"], weights=None,
                          input_shape=(size, size, 3), weighting=weighting)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=config["jit_compile"])
    images, targets = next(iter(attributes.make_dataset(batch, num_tasks, size, batch)))
    model.optimizer.build(model.trainable_variables)
    iterator = iter(tf.data.Dataset.from_tensors((images, targets)).repeat())
    model.make_train_function()

    def step():
        tf.nest.flatten(model.train_function(iterator))[0].numpy()

    start = time.perf_counter()
    step()
    first_s = time.perf_counter() - start
    for _ in range(config["warmup"]):
        step()
    gpu = bool(tf.config.list_logical_devices("GPU"))
    device = "GPU:0" if gpu else "CPU:0"
    try:
        tf.config.experimental.reset_memory_stats(device)
        allocator_stats = True
    except (ValueError, RuntimeError):  # an allocator without statistics
        allocator_stats = False
    rss_before = _status_kb("VmRSS")
    peak_reset = _reset_peak()
    times = []
    for _ in range(config["repeats"]):
        start = time.perf_counter()
        for _ in range(config["steps"]):
            step()
        times.append((time.perf_counter() - start) / config["steps"])
    row = dict(config)
    row.update(step_s=statistics.median(times), step_s_min=min(times), first_call_s=first_s,
               peak_growth_mb=((_status_kb("VmHWM") - rss_before) / 1024 if peak_reset else None),
               rss_mb=rss_before / 1024, machine=platform.machine(),
               device="GPU" if gpu else f"CPU x{os.cpu_count()}")
    if allocator_stats:
        row["tf_peak_mb"] = tf.config.experimental.get_memory_info(device)["peak"] / 2**20
    return row


def configurations(args):
    from keras_mtl import weighting as weighting_lib

    base = dict(trunk=args.trunk, image_size=args.size, batch_size=args.batch,
                jit_compile=args.jit_compile, warmup=args.warmup, repeats=args.repeats,
                steps=args.steps)
    for num_tasks in args.tasks:
        yield dict(base, tasks=num_tasks, method="equal", variant="-", update_every=1,
                   jacobian="-")
        if args.row:  # exactly these rows, in this order
            for spec in args.row:
                method, variant, every, jacobian = spec.split(",")
                yield dict(base, tasks=num_tasks, method=method, variant=variant,
                           update_every=int(every), jacobian=jacobian)
            continue
        for method in args.methods:
            factory = weighting_lib.WEIGHTINGS.lookup(method)
            variants = ["params"] + (["rep_grad"] if factory.supports_rep_grad else [])
            everies = [1] + ([k for k in args.update_every if k > 1]
                             if factory.gramian_weights else [])
            for variant in variants:
                for every in everies:
                    jacobians = (list(args.jacobian) + (
                        [f"chunk {c}" for c in args.task_chunk if c < num_tasks]
                        if every == 1 else []) if factory.gramian_weights else ["loop"])
                    for jacobian in jacobians:
                        yield dict(base, tasks=num_tasks, method=method, variant=variant,
                                   update_every=every, jacobian=jacobian)


def key_of(row):
    return tuple(row.get(field) for field in KEY_FIELDS)


def read_rows(path=JSONL):
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


MEMORY_FIELDS = ("tf_peak_mb", "gpu_peak_mb", "peak_growth_mb")


def _memory(row):
    """`(field, MB)`: the row's first memory measure (`MEMORY_FIELDS`), or `(None, None)`."""
    return next(((f, row[f]) for f in MEMORY_FIELDS if row.get(f) is not None), (None, None))


def write_table(rows, path=TABLE, header=""):
    equal = {(r["tasks"], r["trunk"], r["image_size"], r["batch_size"]): r
             for r in rows if r["method"] == "equal"}
    lines = ["# Many tasks: step time and peak memory as ratios to `equal` (same T)", "",
             "Written by `python -m benchmarks.many_tasks`; one subprocess per row. "
             "time = median seconds per train step; peak = the TensorFlow allocator's peak "
             "during the timed steps (tensors, variables included: the BFC allocator on CPU, "
             "`TF_CPU_ALLOCATOR_USE_BFC`; the GPU's on a GPU); rows without it show the growth "
             "of the process' peak RSS, no ratio where `equal`'s is below 16 MB (noise). "
             "per-task grads: `loop`, `vectorized`, or `chunk c` (the Gramian a chunk of c "
             "tasks at a time, `task_chunk_size=c`).", ""] + ([header, ""] if header else []) + [
             "| T | method | grads | update_every | per-task grads | step ms | x equal "
             "| peak MB | x equal | device |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["tasks"], r["method"] != "equal", r["method"],
                                         r["variant"], r["update_every"], r["jacobian"])):
        base = equal.get((r["tasks"], r["trunk"], r["image_size"], r["batch_size"]))
        field, memory = _memory(r)
        base_field, base_memory = _memory(base) if base else (None, None)
        time_ratio = f"{r['step_s'] / base['step_s']:.2f}x" if base else "-"
        memory_ratio = (f"{memory / base_memory:.2f}x"  # the same measure; RSS below 16 MB: noise
                        if field is not None and field == base_field and base_memory
                        and (field != "peak_growth_mb" or base_memory >= 16) else "-")
        lines.append(
            f"| {r['tasks']} | {r['method']} | {r['variant']} | {r['update_every']} | "
            f"{r['jacobian']} | {1000 * r['step_s']:.1f} | {time_ratio} | "
            f"{'-' if memory is None else f'{memory:.0f}'} | {memory_ratio} | {r['device']} |")
    lines.append("")
    lines.append("Settings of the rows: " + ", ".join(sorted({
        f"{r['trunk']} {r['image_size']} px, batch {r['batch_size']}"
        f"{', XLA' if r['jit_compile'] else ''}" for r in rows})) + ".")
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 8, 32, 64])
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    parser.add_argument("--update-every", type=int, nargs="+", default=[10])
    parser.add_argument("--jacobian", nargs="+", default=["loop", "vectorized"],
                        choices=["loop", "vectorized"])
    parser.add_argument("--task-chunk", type=int, nargs="*", default=[],
                        help="also the Gramian methods with task_chunk_size=c (update_every=1)")
    parser.add_argument("--row", action="append", default=[],
                        help="only this row, as 'method,variant,update_every,jacobian' (e.g. "
                             "'mgda,rep_grad,1,chunk 8'); repeat it; equal comes first")
    parser.add_argument("--header", default="",
                        help="a line for the table's header (the machine and its load)")
    parser.add_argument("--trunk", default="tiny_resnet")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--jit-compile", action="store_true")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--output", default=JSONL)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a JSON config: measure it, print the row
    args = parser.parse_args(argv)
    if args.one:
        print("ROW " + json.dumps(run_one(json.loads(args.one))), flush=True)
        return
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    done = {key_of(row) for row in read_rows(args.output)}
    table = TABLE if args.output == JSONL else os.path.splitext(args.output)[0] + ".md"
    for config in configurations(args):
        if key_of(config) in done:
            continue
        result = subprocess.run([sys.executable, "-m", "benchmarks.many_tasks", "--one",
                                 json.dumps(config)], capture_output=True, text=True,
                                env=dict(os.environ, TF_CPU_ALLOCATOR_USE_BFC="true"))
        rows = [line[4:] for line in result.stdout.splitlines() if line.startswith("ROW ")]
        if not rows:
            print(f"FAILED {config}: {result.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        row = json.loads(rows[0])
        with open(args.output, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        write_table(read_rows(args.output), table, args.header)  # what has finished so far
        print(f"T={row['tasks']:3d} {row['method']:12s} {row['variant']:8s} "
              f"every={row['update_every']:2d} {row['jacobian']:10s} "
              f"{1000 * row['step_s']:8.1f} ms  peak {row.get('tf_peak_mb') or 0:.0f} MB",
              flush=True)
    write_table(read_rows(args.output), table, args.header)


if __name__ == "__main__":
    main()
