"""How hard does each task pull on the shared trunk? Losses and gradient norms per task.

Trains a multi-task model with equal weights and, at a few steps, prints each
task's mean loss and the norm of its gradient at the shared features (P2..P5
of the batch) and at the shared parameters, with their pairwise cosines
(`keras_mtl.analysis.task_gradients`; the BatchNorm statistics are restored
after each measurement). This is the measurement behind the `"calibrated"`
weighting (what `"auto"` stands for).

    python benchmarks/task_gradient_scales.py                       # Penn-Fudan, 96 px
    python benchmarks/task_gradient_scales.py --steps 0 100 250 --image-size 96
"""

import argparse
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.path.join(HERE, "..", "..", "shared", "data",
                                                           "PennFudanPed"))
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--trunk", default="small_resnet")
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 100, 250],
                        help="measure after this many training steps (increasing)")
    parser.add_argument("--batches", type=int, default=4, help="batches averaged per measurement")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import keras

    from keras_mtl import build_mtl
    from keras_mtl.analysis.task_gradients import preserving_state, task_gradients
    from keras_mtl.data import pennfudan

    keras.utils.set_random_seed(args.seed)
    data = pennfudan.leaderboard_factory(args.data_dir, image_size=args.image_size,
                                         batch_size=args.batch_size)(args.seed)
    names = [task.name for task in data.tasks]
    model = build_mtl(data.tasks, trunk=args.trunk, weights=None,
                      input_shape=(args.image_size,) * 2 + (3,), weighting="equal")
    total = max(args.steps)
    schedule = keras.optimizers.schedules.CosineDecay(2e-3, max(1, total))
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4))
    batches = iter(data.train)
    print(f"tasks {names}; equal weights; {args.image_size} px, batch {args.batch_size}, "
          f"{args.trunk}")
    done = 0
    for step in sorted(args.steps):
        if step > done:
            model.fit(data.train, epochs=1, steps_per_epoch=step - done, verbose=0)
            done = step
        for on in ("features", "parameters"):
            norms, losses = [], []
            for _ in range(args.batches):
                images, targets = next(batches)
                grads, loss, _, _ = preserving_state(
                    model, lambda: task_gradients(model, images, targets, on=on))
                grads = grads.numpy()
                norms.append(np.linalg.norm(grads, axis=1))
                losses.append(loss.numpy())
            unit = grads / np.linalg.norm(grads, axis=1, keepdims=True)
            cosines = unit @ unit.T
            pairs = ", ".join(f"{names[i]}/{names[j]} {cosines[i, j]:+.3f}"
                              for i in range(len(names)) for j in range(i + 1, len(names)))
            norm = np.mean(norms, 0)
            print(f"step {step:4d} {on:10s} loss " + " ".join(
                f"{n} {v:.3f}" for n, v in zip(names, np.mean(losses, 0))) + " | norm " +
                " ".join(f"{n} {v:.4g}" for n, v in zip(names, norm)) +
                f" | largest/smallest {norm.max() / norm.min():.1f}x | cosine {pairs}", flush=True)


if __name__ == "__main__":
    main()
