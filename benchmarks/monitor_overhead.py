"""Training-time overhead of `GradientConflictMonitor` at its default interval.

    python benchmarks/monitor_overhead.py            # tiny_resnet, 64 px, batch 32, 5 x 100 steps
    python benchmarks/monitor_overhead.py --quick    # micro_resnet, 32 px, 5 x 10 steps

Two copies of the shapes model (3 tasks, `equal` weighting) train on the same
cached data with `fit`; one has a `GradientConflictMonitor` with its default
interval (50 steps; `--interval` to change it). Epochs of `--steps` steps
alternate between the two models after one warm-up epoch each (compilation
and the monitor's first trace are excluded), and the overhead is the median
of the paired per-epoch ratios, minus 1. Goal: <= 10%.
"""

import argparse
import os
import sys
import time

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

GOAL = 0.10


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="micro_resnet, 32 px, 10 steps")
    parser.add_argument("--steps", type=int, default=None, help="steps per epoch (default 100)")
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per model")
    parser.add_argument("--interval", type=int, default=None,
                        help="monitor interval (default: the callback's default)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import keras

    import keras_mtl as mtl
    from benchmarks.timing import median, paired_ratio
    from keras_mtl.callbacks import GradientConflictMonitor

    trunk, size, batch = ("micro_resnet", 32, 8) if args.quick else ("tiny_resnet", 64, 32)
    steps = args.steps or (10 if args.quick else 100)
    keras.utils.set_random_seed(0)
    data = mtl.data.shapes.make_dataset(steps * batch, image_size=size, batch_size=batch,
                                        cache=True).repeat()

    def build():
        shapes = mtl.data.shapes
        tasks = [mtl.tasks.Classification("label", shapes.NUM_CLASSES),
                 mtl.tasks.Detection("objects", shapes.NUM_CLASSES),
                 mtl.tasks.Segmentation("mask", shapes.NUM_SEGMENTATION_CLASSES)]
        model = mtl.build_mtl(tasks, trunk=trunk, weights=None, input_shape=(size, size, 3))
        model.compile(optimizer=keras.optimizers.AdamW(1e-3))
        return model

    plain, monitored = build(), build()
    monitor_kwargs = {} if args.interval is None else {"interval": args.interval}
    monitor = GradientConflictMonitor(data.take(1), **monitor_kwargs)

    def epoch(model, callbacks):
        start = time.perf_counter()
        model.fit(data, epochs=1, steps_per_epoch=steps, callbacks=callbacks, verbose=0)
        return time.perf_counter() - start

    epoch(plain, []), epoch(monitored, [monitor])  # warm-up: tracing, the monitor's first call
    times = {"plain": [], "monitored": []}
    for _ in range(args.repeats):
        times["plain"].append(epoch(plain, []))
        times["monitored"].append(epoch(monitored, [monitor]))
    ratio = paired_ratio(times["monitored"], times["plain"])
    print(f"trunk {trunk}, {size} px, batch {batch}, {steps} steps per epoch, monitor interval "
          f"{monitor.interval}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"epoch time: plain {median(times['plain']):.2f} s, monitored "
          f"{median(times['monitored']):.2f} s; overhead {100 * (ratio - 1):+.1f}% "
          f"(goal <= {100 * GOAL:.0f}%: {'met' if ratio - 1 <= GOAL else 'not met'})")
    return ratio


if __name__ == "__main__":
    main()
