"""Penn-Fudan pedestrians: detection + person segmentation + campus, on real photos.

One model, three tasks, trained from scratch on 136 photos, validated on 34
(every fifth file in sorted order, both campuses in both splits):

- `pedestrians`: pedestrian boxes (detection, 1 class);
- `person`: pedestrian vs background pixels (segmentation);
- `campus`: which campus the photo is from, Fudan or Penn (from the file name).

The defaults: the `small_resnet` trunk (3.6M parameters) at 192 px, 1600
steps of 16 images, AdamW with a cosine decay, and the `"auto"` weighting:
each task's gradient at the shared features is scaled by the inverse of its
norm over the first 100 steps (with equal weights the detection gradient,
6-9x the mask gradient there, drives the shared trunk and the person masks
lose most; this used to be fixed by a hand-set `person=8`), and a person
mask head with two 3x3 convolutions of its own on the shared features
(`--mask-head-convs 2`: over 5 folds at this budget the multi-task masks
came within 1.8% of their own model's IoU on average, against 4.0% with
the plain head; `benchmarks/results/leaderboard_full_head_convs2.md`). `--weighting
NAME` or `--task-weights TASK=W ...` choose otherwise; `--architecture mtan`
gives each task its own attention over the shared features.

    python recipes/pennfudan.py --data-dir ../shared/data/PennFudanPed             # default run
    python recipes/pennfudan.py --data-dir ../shared/data/PennFudanPed --baselines # + single-task
    python recipes/pennfudan.py --quick --baselines                                # smoke test

It prints the validation metrics against the goals (person IoU >= 0.65, box
mAP@.5 >= 0.70 in under 30 minutes on 2 CPU cores), the efficiency of the
multi-task model against the three single-task models (parameters, FLOPs
per image, images/s), and with `--baselines` trains the single-task
baselines on the same data and budget and prints the comparison table with
delta-m and the training-time ratio (goal <= 0.5). Writes `history.json`,
`curves.png`, `task_curves.png`, `weights.png`, `gallery.png`,
`efficiency.png` (and `comparison.png`, `comparison.json`) to `--output-dir`,
and exports a SavedModel to `OUTPUT_DIR/export/1` whose per-head parity
with `predict` on two validation images is printed (`check_export`;
`--no-export` skips it).
"""

import argparse
import json
import os
import sys
import time

DEFAULT_DATA_DIR = os.path.join("..", "shared", "data", "PennFudanPed")
DEFAULTS = dict(
    trunk="small_resnet", weights=None, image_size=192, batch_size=16, epochs=40, steps=40,
    weighting="auto", learning_rate=2e-3, weight_decay=1e-4, scale_low=0.7, scale_high=1.4,
    dice_weight=0.0, mask_head_convs=2, architecture="hps",
)
GOALS = {"person_iou": 0.65, "map50": 0.70, "minutes": 30.0, "time_ratio": 0.5}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                        help="the PennFudanPed folder (default %(default)s)")
    parser.add_argument("--trunk", default=DEFAULTS["trunk"],
                        help="trunk name (keras_mtl.trunks.names()), default %(default)s")
    parser.add_argument("--weights", default=DEFAULTS["weights"],
                        help="trunk weights: 'imagenet', a file path, or omitted for random")
    parser.add_argument("--image-size", type=int, default=DEFAULTS["image_size"],
                        help="square image size, a multiple of 32 (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="steps per epoch")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--weighting", default=None,
                        help="task weighting name (keras_mtl.weighting.names()); default "
                             f"{DEFAULTS['weighting']}")
    parser.add_argument("--architecture", default=DEFAULTS["architecture"],
                        help="how trunk and heads are wired (keras_mtl.architectures.names()); "
                             f"default {DEFAULTS['architecture']}")
    parser.add_argument("--task-weights", nargs="+", metavar="TASK=WEIGHT",
                        help="static loss weights, e.g. person=4 (tasks not named get 1)")
    parser.add_argument("--learning-rate", type=float, default=DEFAULTS["learning_rate"])
    parser.add_argument("--weight-decay", type=float, default=DEFAULTS["weight_decay"])
    parser.add_argument("--scale", type=float, nargs=2, default=(DEFAULTS["scale_low"],
                                                                 DEFAULTS["scale_high"]),
                        metavar=("LOW", "HIGH"), help="scale jitter range (default 0.7 1.4)")
    parser.add_argument("--dice-weight", type=float, default=DEFAULTS["dice_weight"],
                        help="weight of the Dice loss of the person masks (default %(default)s)")
    parser.add_argument("--mask-head-convs", type=int, default=DEFAULTS["mask_head_convs"],
                        help="extra 3x3 convolutions of the person mask head, the task's own "
                             "capacity on the shared features (default %(default)s)")
    parser.add_argument("--no-augment", action="store_true", help="no flips, scale or colour")
    parser.add_argument("--baselines", action="store_true",
                        help="also train the 3 single-task models; print the comparison")
    parser.add_argument("--jit-compile", action="store_true", help="XLA (slower on CPU)")
    parser.add_argument("--output-dir", default="runs/pennfudan",
                        help="where history, plots and tables go (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-export", action="store_true",
                        help="skip the SavedModel export (OUTPUT_DIR/export/1) and its parity "
                             "check")
    parser.add_argument("--quick", action="store_true",
                        help="micro trunk, 64 px, 2 epochs of 2 steps: a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.trunk, args.image_size, args.batch_size = "micro_resnet", 64, 4
        args.epochs, args.steps = 2, 2
    if args.task_weights and args.weighting:
        parser.error("give --weighting or --task-weights, not both")
    from keras_mtl import architectures

    if args.architecture not in architectures.names():
        parser.error(f"--architecture {args.architecture!r} is not one of "
                     f"{architectures.names()}")
    if args.task_weights:
        args.weighting = parse_task_weights(args.task_weights, parser)
    elif not args.weighting:
        args.weighting = DEFAULTS["weighting"]
    if args.image_size % 32:
        parser.error(f"--image-size must be a multiple of 32, got {args.image_size}")
    return args


def parse_task_weights(items, parser):
    """["person=4", ...] -> {"campus": 1.0, "pedestrians": 1.0, "person": 4.0}."""
    from keras_mtl.data.pennfudan import TASK_NAMES

    weights = {name: 1.0 for name in TASK_NAMES.values()}
    for item in items:
        name, _, value = item.partition("=")
        if name not in weights:
            parser.error(f"--task-weights: unknown task '{name}'; the tasks are {sorted(weights)}")
        try:
            weights[name] = float(value)
        except ValueError:
            parser.error(f"--task-weights: '{item}' is not TASK=NUMBER")
    return weights


def print_goals(rows):
    width = max(len(row[0]) for row in rows)
    print(f"\n{'validation (34 images)'.ljust(width)}  {'value':>8}  goal")
    for name, value, goal in rows:
        text = "n/a" if value is None else f"{value:8.4f}"
        print(f"{name.ljust(width)}  {text:>8}  {goal}")


def make_tasks(args):
    """The three tasks with the recipe's options (the person mask head's Dice weight and
    extra convolutions)."""
    from keras_mtl.data import pennfudan

    return pennfudan.make_tasks(segmentation_kwargs={"dice_weight": args.dice_weight,
                                                     "head_convs": args.mask_head_convs})


def main(argv=None):
    args = parse_args(argv)
    import keras_mtl as mtl  # first: it imports TensorFlow without its C++ log lines

    import keras
    from keras_mtl import plotting
    from keras_mtl.data import pennfudan
    from keras_mtl.data.augment import JointAugmentation
    from keras_mtl.evaluation import compare, efficiency_report, train_and_evaluate
    from keras_mtl.export_check import export_and_check
    from keras_mtl.plotting import plot_efficiency

    os.makedirs(args.output_dir, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    names = pennfudan.TASK_NAMES
    tasks = make_tasks(args)
    augment = None if args.no_augment else JointAugmentation.from_tasks(
        tasks, scale_range=tuple(args.scale), translate=0.1, seed=args.seed)
    train = pennfudan.load_pennfudan(args.data_dir, "train", image_size=args.image_size,
                                     batch_size=args.batch_size, repeat=True,
                                     drop_remainder=True, augment=augment, seed=args.seed)
    val = pennfudan.load_pennfudan(args.data_dir, "val", image_size=args.image_size,
                                   batch_size=args.batch_size)
    input_shape = (args.image_size, args.image_size, 3)
    total_steps = args.epochs * args.steps

    def optimizer(steps):
        schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, max(1, steps))
        return keras.optimizers.AdamW(schedule, weight_decay=args.weight_decay)

    class_names = {names["segmentation"]: pennfudan.MASK_CLASS_NAMES,
                   names["classification"]: pennfudan.CAMPUS_NAMES,
                   names["detection"]: pennfudan.CLASS_NAMES}
    model = mtl.build_mtl(tasks, trunk=args.trunk, weights=args.weights,
                          input_shape=input_shape, weighting=args.weighting,
                          architecture=args.architecture)
    print(f"keras_mtl {mtl.__version__}: Penn-Fudan, tasks {[t.name for t in tasks]}, trunk "
          f"{args.trunk} ({model.trunk.count_params():,} params), model "
          f"{model.count_params():,} params, {args.image_size}px, batch {args.batch_size}, "
          f"weighting {args.weighting}, architecture {args.architecture}, {total_steps} steps, "
          f"{os.cpu_count()} CPUs")
    verbose = 2 if not sys.stdout.isatty() else 1
    start = time.time()
    run = train_and_evaluate(model, train, val, epochs=args.epochs, steps_per_epoch=args.steps,
                             optimizer=optimizer, jit_compile=args.jit_compile, verbose=verbose,
                             class_names=class_names, name="multi_task")
    wall_minutes = (time.time() - start) / 60.0
    metrics = run.metrics
    person_iou = metrics[names["segmentation"]]["iou_person"]
    map50 = metrics[names["detection"]]["map50"]
    rows = [
        ("person IoU (person class)", person_iou, f">= {GOALS['person_iou']}"),
        ("person mIoU (2 classes)", metrics[names["segmentation"]]["miou"], ""),
        ("pedestrians mAP@.5", map50, f">= {GOALS['map50']}"),
        ("pedestrians mAP@[.5:.95]", metrics[names["detection"]]["map"], ""),
        ("campus accuracy", metrics[names["classification"]]["accuracy"], ""),
        ("train minutes", run.train_seconds / 60.0, f"< {GOALS['minutes']:.0f} on 2 CPU cores"),
    ]
    print_goals(rows)
    goals_met = {"person_iou": person_iou >= GOALS["person_iou"], "map50": map50 >= GOALS["map50"],
                 "minutes": run.train_seconds / 60.0 < GOALS["minutes"]}
    print(f"goals met: {goals_met} (wall time with validation: {wall_minutes:.1f} min)")

    # === Plots of the multi-task run ===
    out = args.output_dir
    plotting.plot_history(run.history, os.path.join(out, "curves.png"),
                          task_names=[t.name for t in tasks])
    plotting.plot_task_curves(run.history, os.path.join(out, "task_curves.png"),
                              task_names=[t.name for t in tasks])
    plotting.plot_weights(run.history, os.path.join(out, "weights.png"))
    images, targets = next(iter(val))
    images = images[:8].numpy()
    predictions = model.predict(images, verbose=0)
    plotting.plot_prediction_gallery(
        images, os.path.join(out, "gallery.png"), predictions=predictions,
        detection=names["detection"], segmentation=names["segmentation"],
        classification=names["classification"], class_names=class_names,
        ground_truth={k: (v if not isinstance(v, dict) else {kk: vv[:8] for kk, vv in v.items()})
                      for k, v in targets.items()})

    results = {"args": vars(args), "metrics": metrics, "train_seconds": run.train_seconds,
               "history": run.history, "goals_met": goals_met}

    # === Single-task baselines, or the efficiency of untrained ones ===
    if args.baselines:
        comparison = compare(tasks, train, val, trunk=args.trunk, weights=args.weights,
                             input_shape=input_shape, epochs=args.epochs,
                             steps_per_epoch=args.steps, optimizer=optimizer,
                             jit_compile=args.jit_compile, multi_task=run,
                             delta_metrics={names["classification"]: ["accuracy"],
                                            names["detection"]: ["map50", "map"],
                                            names["segmentation"]: ["iou_person"]},
                             class_names=class_names, print_table=False, seed=args.seed)
        print("\n" + comparison.table())
        ratio = comparison.train_time_ratio
        delta = comparison.delta_m
        print(f"training time ratio {ratio:.2f} (goal <= {GOALS['time_ratio']}: "
              f"{'met' if ratio <= GOALS['time_ratio'] else 'not met'}), delta-m "
              f"{'undefined' if delta != delta else f'{delta:+.2f}%'}")
        plotting.plot_comparison(comparison, os.path.join(out, "comparison.png"))
        with open(os.path.join(out, "comparison.json"), "w") as file:
            json.dump(comparison.to_dict(), file, indent=1, default=float)
        report = comparison.efficiency
        results.update(delta_m=comparison.delta_m, train_time_ratio=ratio,
                       comparison=comparison.to_dict())
    else:
        singles = {t.name: mtl.build_single_task(type(t).from_config(t.get_config()),
                                                 trunk=args.trunk, weights=args.weights,
                                                 input_shape=input_shape) for t in tasks}
        report = efficiency_report(model, singles)
    print("\nefficiency (inference, one image):       multi-task   3 single-task models")
    print(f"  parameters                               {report['multi_task']['params']:>10,}   "
          f"{report['single_task_sum']['params']:>10,}")
    print(f"  FLOPs / image                            {report['multi_task']['flops']:>10.3g}   "
          f"{report['single_task_sum']['flops']:>10.3g}")
    print(f"  images/s (batch 8, best of 3)            "
          f"{report['multi_task']['images_per_second']:>10.1f}   "
          f"{report['single_task_sum']['images_per_second']:>10.1f}")
    plot_efficiency(report, os.path.join(out, "efficiency.png"))
    results["efficiency"] = report
    if not args.no_export:
        results["export"] = export_and_check(model, out, images[:2])
    with open(os.path.join(out, "history.json"), "w") as file:
        json.dump(results, file, indent=1, default=float)
    print(f"History, plots and tables in {out}/")
    return results


if __name__ == "__main__":
    main()
