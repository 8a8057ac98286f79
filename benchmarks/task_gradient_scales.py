"""How hard does each task pull on the shared trunk? Losses and gradient norms per task.

Trains a multi-task model with equal weights and, at a few steps, prints each
task's mean loss and the norm of its gradient at the shared features (P2..P5
of the batch) and at the shared parameters, with their pairwise cosines
(`keras_mtl.analysis.task_gradients`; the BatchNorm statistics are restored
after each measurement). This is the measurement behind the `"calibrated"`
weighting (what `"auto"` stands for). With `--per-level`, each task's
feature-gradient norm is also printed per level, raw and times the
weighting's current weight (the share of the trunk's update it gets).

    python benchmarks/task_gradient_scales.py                       # Penn-Fudan, 96 px
    python benchmarks/task_gradient_scales.py --steps 0 100 250 --image-size 96
    # how the shares move over a long run under the default weighting
    python benchmarks/task_gradient_scales.py --weighting calibrated --per-level \
        --steps 100 400 800 1200 1590 --schedule-steps 1600
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
    parser.add_argument("--weighting", default="equal", help="the weighting trained with")
    parser.add_argument("--schedule-steps", type=int,
                        help="length of the cosine decay (default: the last --steps)")
    parser.add_argument("--per-level", action="store_true",
                        help="also print the feature-gradient norm per level (P2..P5)")
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
                      input_shape=(args.image_size,) * 2 + (3,), weighting=args.weighting)
    total = args.schedule_steps or max(args.steps)
    schedule = keras.optimizers.schedules.CosineDecay(2e-3, max(1, total))
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4))
    batches = iter(data.train)
    print(f"tasks {names}; weighting {args.weighting}; {args.image_size} px, batch "
          f"{args.batch_size}, {args.trunk}")
    done = 0
    for step in sorted(args.steps):
        if step > done:
            model.fit(data.train, epochs=1, steps_per_epoch=step - done, verbose=0)
            done = step
        for on in ("features", "parameters"):
            norms, losses, level_norms = [], [], []
            for _ in range(args.batches):
                images, targets = next(batches)
                grads, loss, _, per_source = preserving_state(
                    model, lambda: task_gradients(model, images, targets, on=on))
                grads = grads.numpy()
                norms.append(np.linalg.norm(grads, axis=1))
                losses.append(loss.numpy())
                if args.per_level and on == "features":
                    level_norms.append([[float(np.linalg.norm(g)) for g in row]
                                        for row in per_source])  # (T, levels)
            unit = grads / np.linalg.norm(grads, axis=1, keepdims=True)
            cosines = unit @ unit.T
            pairs = ", ".join(f"{names[i]}/{names[j]} {cosines[i, j]:+.3f}"
                              for i in range(len(names)) for j in range(i + 1, len(names)))
            norm = np.mean(norms, 0)
            print(f"step {step:4d} {on:10s} loss " + " ".join(
                f"{n} {v:.3f}" for n, v in zip(names, np.mean(losses, 0))) + " | norm " +
                " ".join(f"{n} {v:.4g}" for n, v in zip(names, norm)) +
                f" | largest/smallest {norm.max() / norm.min():.1f}x | cosine {pairs}", flush=True)
            if level_norms:
                print_levels(model, names, np.mean(level_norms, 0))


def print_levels(model, names, level_norms):
    """Per task: the feature-gradient norm of each level, raw and times the current weight."""
    from keras import ops

    weights = ops.convert_to_numpy(model.weighting.current_weights())  # (T,)
    levels = [f"P{index + 2}" for index in range(level_norms.shape[1])]  # hps: the trunk's
    print("    weights " + " ".join(f"{n} {w:.3g}" for n, w in zip(names, weights)))
    for index, name in enumerate(names):
        raw = " ".join(f"{level} {v:.3g}" for level, v in zip(levels, level_norms[index]))
        weighted = " ".join(f"{v * weights[index]:.3g}" for v in level_norms[index])
        print(f"    {name:12s} raw {raw} | weighted {weighted}", flush=True)


if __name__ == "__main__":
    main()
