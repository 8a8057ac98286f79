"""The gradient step's paths, timed interleaved in one process (issue 20).

`python -m benchmarks.gramian_paths T SIZE BATCH TRUNK CONFIGS [REPEATS]`, CONFIGS a
comma-separated list of `method:variant:path:every`: variant `par` (parameter gradients) or
`rep` (rep_grad); path `old` (the `(T, D)` matrix and `aggregate`), `loop` (the Gramian
path, a loop of T `tape.gradient` calls) or `vec` (the Gramian path, one `tape.jacobian`);
every = `update_every`. Each is timed against `equal` with `benchmarks.timing`
(interleaved blocks; the ratio is the median of the paired ratios). Prints one JSON line
per configuration. Results of a run are in `benchmarks/results/many_tasks_paths.md`.

```python
python -m benchmarks.gramian_paths 8 64 16 tiny_resnet mgda:par:old:1,mgda:par:loop:1
```
"""

import json
import statistics
import sys
import time


def main(argv):
    import keras_mtl.quiet  # noqa: F401

    import keras

    import keras_mtl as mtl
    from benchmarks import timing
    from benchmarks.common import TrainStep
    from keras_mtl.data import attributes
    from keras_mtl.training import gramian

    num_tasks, size, batch, trunk = int(argv[0]), int(argv[1]), int(argv[2]), argv[3]
    configs = argv[4].split(",")
    repeats = int(argv[5]) if len(argv) > 5 else 5
    images, targets = next(iter(attributes.make_dataset(batch, num_tasks, size, batch)))
    original = gramian.uses_gramian_path
    steps = {}
    for label in ["equal"] + configs:
        keras.utils.set_random_seed(0)
        weighting, path = "equal", "loop"
        if label != "equal":
            name, variant, path, every = label.split(":")
            kwargs = {"rep_grad": variant == "rep"}
            if int(every) > 1:
                kwargs["update_every"] = int(every)
            weighting = mtl.weighting.get(name, **kwargs)
        model = mtl.build_mtl(attributes.make_tasks(num_tasks), trunk=trunk, weights=None,
                              input_shape=(size, size, 3), weighting=weighting)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        # Read when the step is traced (the first call).
        gramian.uses_gramian_path = original if path != "old" else (lambda model: False)
        gramian.VECTORIZE_FROM_TASKS = 1 if path == "vec" else 2**31 - 1
        step = TrainStep(model, (images, targets))
        start = time.perf_counter()
        step.first()
        print(f"{label}: first call {time.perf_counter() - start:.1f} s", file=sys.stderr)
        gramian.uses_gramian_path = original
        steps[label] = step
    times = timing.interleaved_times(steps, warmup=2, repeats=repeats, steps=3)
    for label, values in times.items():
        print(json.dumps({"T": num_tasks, "size": size, "batch": batch, "trunk": trunk,
                          "config": label, "ms": round(1000 * statistics.median(values), 1),
                          "ratio": round(timing.paired_ratio(values, times["equal"]), 2)}))


if __name__ == "__main__":
    main(sys.argv[1:])
