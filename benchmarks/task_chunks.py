"""The memory budget of the per-task gradients (issue 20): the Gramian chunked over tasks.

`keras_mtl.training.task_chunks.chunked_gramian` against the unchunked
`gramian(per_task_gradients(...))` on one large shared layer (D entries),
so that the T per-task gradients (T x D float32) dominate the step's
memory: peak bytes of TensorFlow's allocator (the BFC allocator on the
CPU, `TF_CPU_ALLOCATOR_USE_BFC=true`, set before TensorFlow is imported)
and time per call, each path compiled once by `tf.function` (with and
without XLA), measured after a warm-up call. The many-task train steps
(`benchmarks/many_tasks.py`) use a micro trunk whose T x D is a few MB,
too small to show the budget there.

```python
python -m benchmarks.task_chunks --tasks 64 --dim 1048576 --chunks 8 16
```
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")


def measure(fn, device, repeats):
    """`(peak MiB, median seconds)` of `fn()` after one warm-up call."""
    import statistics

    import tensorflow as tf

    fn().numpy()  # trace, compile, warm up
    tf.config.experimental.reset_memory_stats(device)
    base = tf.config.experimental.get_memory_info(device)["current"]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn().numpy()
        times.append(time.perf_counter() - start)
    peak = tf.config.experimental.get_memory_info(device)["peak"]
    return (peak - base) / 2**20, statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--dim", type=int, default=2**20, help="D, the shared entries")
    parser.add_argument("--chunks", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import keras_mtl.quiet  # noqa: F401

    import keras
    import tensorflow as tf
    from keras import layers, ops

    from keras_mtl.training import gramian, task_chunks

    keras.utils.set_random_seed(0)
    width = 256
    shared = layers.Dense(args.dim // width, activation="tanh")  # D = width * dim / width
    heads = layers.Dense(args.tasks)
    x = tf.random.normal((4, width))  # (B, width)
    heads(shared(x))
    sources = [shared.kernel]  # (width, D / width)
    device = "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"

    def objectives(tape):
        out = heads(shared(x))  # (B, T)
        return [ops.mean(out[:, t] ** 2) for t in range(args.tasks)]

    def path(chunk):
        def gram():
            with tf.GradientTape(persistent=True) as tape:
                objs = objectives(tape)
            if chunk is None:
                return gramian.gramian(gramian.per_task_gradients(tape, objs, sources))
            return task_chunks.chunked_gramian(tape, objs, sources, chunk)  # (T, T)
        return gram

    rows_mib = args.tasks * args.dim * 4 / 2**20
    print(f"T = {args.tasks}, D = {args.dim}: the T per-task gradients take {rows_mib:.0f} MiB "
          f"(float32); device {device}")
    print("| path | XLA | peak MiB | time s |")
    print("|---|---|---|---|")
    for jit_compile in (False, True):
        reference = None
        for chunk in [None] + args.chunks:
            fn = tf.function(path(chunk), jit_compile=jit_compile)
            peak, seconds = measure(fn, device, args.repeats)
            value = ops.convert_to_numpy(fn())
            reference = value if reference is None else reference
            error = abs(value - reference).max() / abs(reference).max()
            name = "unchunked" if chunk is None else f"chunk {chunk}"
            print(f"| {name} | {'yes' if jit_compile else 'no'} | {peak:.0f} | {seconds:.3f} |"
                  + ("" if chunk is None else f" rel. diff {error:.1e}"), flush=True)


if __name__ == "__main__":
    main()
