"""Oxford-IIIT Pet: breed + species classification, head detection, trimap segmentation.

One model, four tasks, on the TFDS `oxford_iiit_pet` data set (Parkhi et
al., CVPR 2012): 37 breeds, cat or dog, the box of the pet's head, and the
trimap (background / pet / border). TFDS must have prepared the data (see
`keras_mtl.data.tfds_datasets`); nothing is downloaded unless `--download`.
Validation is the last 15 % of TFDS' `train` split (the `test` split has no
head boxes).

    python recipes/oxford_pets.py --data-dir ~/tensorflow_datasets              # GPU-sized run
    python recipes/oxford_pets.py --data-dir DIR --trunk resnet50 --weights imagenet
    python recipes/oxford_pets.py --data-dir DIR --baselines                    # + single-task
    python recipes/oxford_pets.py --quick --data-dir DIR                        # smoke test

Prints the validation metrics (breed and species accuracy, head mAP,
trimap mIoU), the efficiency of the multi-task model against the four
single-task models, and with `--baselines` the comparison table with
delta-m. Writes `history.json`, `curves.png`, `task_curves.png`,
`weights.png`, `gallery.png`, `efficiency.png` (and `comparison.png`,
`comparison.json`) to `--output-dir`, and exports a SavedModel to
`OUTPUT_DIR/export/1` whose per-head parity with `predict` on two
validation images is printed (`check_export`; `--no-export` skips it).
"""

import argparse
import json
import os
import sys
import time

DEFAULTS = dict(
    trunk="resnet18", weights=None, image_size=160, batch_size=32, epochs=20, steps=100,
    weighting="auto", learning_rate=1e-3, weight_decay=1e-4,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None,
                        help="TFDS data folder (default $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    parser.add_argument("--download", action="store_true",
                        help="let TFDS download and prepare the data (needs internet)")
    parser.add_argument("--trunk", default=DEFAULTS["trunk"])
    parser.add_argument("--weights", default=DEFAULTS["weights"],
                        help="trunk weights: 'imagenet', a file path, or omitted for random")
    parser.add_argument("--image-size", type=int, default=DEFAULTS["image_size"])
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="steps per epoch")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--weighting", default=DEFAULTS["weighting"])
    parser.add_argument("--learning-rate", type=float, default=DEFAULTS["learning_rate"])
    parser.add_argument("--weight-decay", type=float, default=DEFAULTS["weight_decay"])
    parser.add_argument("--train-split", default="train[:85%]")
    parser.add_argument("--val-split", default="train[85%:]")
    parser.add_argument("--cache", action="store_true",
                        help="keep the resized training images in memory")
    parser.add_argument("--baselines", action="store_true",
                        help="also train the 4 single-task models; print the comparison")
    parser.add_argument("--jit-compile", action="store_true")
    parser.add_argument("--output-dir", default="runs/oxford_pets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-export", action="store_true",
                        help="skip the SavedModel export (OUTPUT_DIR/export/1) and its parity "
                             "check")
    parser.add_argument("--quick", action="store_true",
                        help="micro trunk, 64 px, 2 epochs of 2 steps: a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.trunk, args.weights, args.image_size, args.batch_size = "micro_resnet", None, 64, 4
        args.epochs, args.steps = 2, 2
    if args.image_size % 32:
        parser.error(f"--image-size must be a multiple of 32, got {args.image_size}")
    return args


def main(argv=None):
    args = parse_args(argv)
    import keras_mtl as mtl  # first: it imports TensorFlow without its C++ log lines

    import keras
    from keras_mtl import plotting
    from keras_mtl.data import tfds_datasets as pets
    from keras_mtl.data.augment import JointAugmentation
    from keras_mtl.evaluation import compare, efficiency_report, train_and_evaluate
    from keras_mtl.export_check import export_and_check

    os.makedirs(args.output_dir, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    names = pets.PETS_TASK_NAMES
    tasks = pets.pets_tasks(feature_level="P3")
    augment = JointAugmentation.from_tasks(tasks, scale_range=(0.8, 1.25), seed=args.seed)
    common = dict(image_size=args.image_size, batch_size=args.batch_size, data_dir=args.data_dir,
                  download=args.download)
    train = pets.load_oxford_pets(args.train_split, repeat=True, drop_remainder=True,
                                  augment=augment, seed=args.seed, cache=args.cache, **common)
    val = pets.load_oxford_pets(args.val_split, shuffle=False, **common)
    input_shape = (args.image_size, args.image_size, 3)

    def optimizer(steps):
        schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, max(1, steps))
        return keras.optimizers.AdamW(schedule, weight_decay=args.weight_decay)

    class_names = {names["trimap"]: pets.TRIMAP_NAMES, names["species"]: pets.SPECIES_NAMES}
    model = mtl.build_mtl(tasks, trunk=args.trunk, weights=args.weights, input_shape=input_shape,
                          weighting=args.weighting)
    print(f"keras_mtl {mtl.__version__}: Oxford-IIIT Pet, tasks {[t.name for t in tasks]}, "
          f"trunk {args.trunk}, model {model.count_params():,} params, {args.image_size}px, "
          f"{args.epochs * args.steps} steps")
    start = time.time()
    run = train_and_evaluate(model, train, val, epochs=args.epochs, steps_per_epoch=args.steps,
                             optimizer=optimizer, jit_compile=args.jit_compile,
                             verbose=2 if not sys.stdout.isatty() else 1,
                             class_names=class_names, name="multi_task")
    metrics = run.metrics
    print(f"\nvalidation ({args.val_split})")
    for task, values in metrics.items():
        print(f"  {task:8s} " + "  ".join(f"{k} {v:.4f}" for k, v in values.items()))
    print(f"train minutes {run.train_seconds / 60:.1f} (wall {(time.time() - start) / 60:.1f})")

    out = args.output_dir
    plotting.plot_history(run.history, os.path.join(out, "curves.png"),
                          task_names=[t.name for t in tasks])
    plotting.plot_task_curves(run.history, os.path.join(out, "task_curves.png"),
                              task_names=[t.name for t in tasks])
    plotting.plot_weights(run.history, os.path.join(out, "weights.png"))
    images, targets = next(iter(val))[:2]
    images = images[:8].numpy()
    plotting.plot_prediction_gallery(
        images, os.path.join(out, "gallery.png"), predictions=model.predict(images, verbose=0),
        detection=names["head"], segmentation=names["trimap"],
        classification=[names["species"], names["breed"]], class_names=class_names)

    results = {"args": vars(args), "metrics": metrics, "train_seconds": run.train_seconds,
               "history": run.history}
    if args.baselines:
        comparison = compare(tasks, train, val, trunk=args.trunk, weights=args.weights,
                             input_shape=input_shape, epochs=args.epochs,
                             steps_per_epoch=args.steps, optimizer=optimizer,
                             jit_compile=args.jit_compile, multi_task=run,
                             class_names=class_names, print_table=False, seed=args.seed)
        print("\n" + comparison.table())
        plotting.plot_comparison(comparison, os.path.join(out, "comparison.png"))
        with open(os.path.join(out, "comparison.json"), "w") as file:
            json.dump(comparison.to_dict(), file, indent=1, default=float)
        report = comparison.efficiency
        results.update(delta_m=comparison.delta_m, comparison=comparison.to_dict())
    else:
        singles = {t.name: mtl.build_single_task(type(t).from_config(t.get_config()),
                                                 trunk=args.trunk, weights=args.weights,
                                                 input_shape=input_shape) for t in tasks}
        report = efficiency_report(model, singles)
    print(f"\nefficiency: multi-task {report['multi_task']['params']:,} params, "
          f"{report['multi_task']['flops']:.3g} FLOPs/image, "
          f"{report['multi_task']['images_per_second']:.1f} images/s; 4 single-task models "
          f"{report['single_task_sum']['params']:,} params, "
          f"{report['single_task_sum']['flops']:.3g} FLOPs/image, "
          f"{report['single_task_sum']['images_per_second']:.1f} images/s")
    plotting.plot_efficiency(report, os.path.join(out, "efficiency.png"))
    results["efficiency"] = report
    if not args.no_export:
        results["export"] = export_and_check(model, out, images[:2])
    with open(os.path.join(out, "history.json"), "w") as file:
        json.dump(results, file, indent=1, default=float)
    print(f"History, plots and tables in {out}/")
    return results


if __name__ == "__main__":
    main()
