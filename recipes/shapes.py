"""Train one model on synthetic shapes: classification, detection, segmentation.

The embedded default of keras_mtl: no download, data made on the fly.

    python recipes/shapes.py            # the default run (see README for time and metrics)
    python recipes/shapes.py --quick    # a few steps: checks that everything runs

It trains, evaluates on held-out images (a different data seed), prints a
table of per-task metrics, writes `history.json` and `curves.png`, exports
a SavedModel, a TFLite file and (with the onnx extra) an ONNX file, and
prints their parity with `predict` per output (`check_export`).
"""

import argparse
import importlib.util
import json
import os
import sys
import time

DEFAULTS = dict(
    trunk="tiny_resnet", weights=None, image_size=64, batch_size=32, epochs=12,
    steps=150, train_size=9600, val_size=512, weighting="auto", learning_rate=2e-3,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trunk", default=DEFAULTS["trunk"],
                        help="trunk name (keras_mtl.trunks.names()), default %(default)s")
    parser.add_argument("--weights", default=DEFAULTS["weights"],
                        help="trunk weights: 'imagenet', a file path, or omitted for random")
    parser.add_argument("--image-size", type=int, default=DEFAULTS["image_size"],
                        help="square image size in pixels, a multiple of 32 (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="steps per epoch")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--train-size", type=int, default=DEFAULTS["train_size"],
                        help="distinct training images (cached, reshuffled each epoch)")
    parser.add_argument("--val-size", type=int, default=DEFAULTS["val_size"],
                        help="held-out images for the final metrics")
    parser.add_argument("--weighting", default=DEFAULTS["weighting"],
                        help="task weighting name (keras_mtl.weighting.names())")
    parser.add_argument("--learning-rate", type=float, default=DEFAULTS["learning_rate"])
    parser.add_argument("--jit-compile", action="store_true",
                        help="XLA-compile the train step (often slower on CPU, faster on GPU)")
    parser.add_argument("--output-dir", default="runs/shapes",
                        help="where history, plots and the SavedModel go (default %(default)s)")
    parser.add_argument("--no-detection", action="store_true",
                        help="train classification + segmentation only")
    parser.add_argument("--analyse", action="store_true",
                        help="before training: task affinity and gradient conflict on a short run "
                             "(the model is restored after it), printed, with analysis.png")
    parser.add_argument("--quick", action="store_true",
                        help="2 epochs of 3 steps at 32 px: a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.steps, args.image_size = 2, 3, 32
        args.train_size, args.val_size, args.batch_size = 64, 32, 8
    if args.image_size % 32:
        parser.error(f"--image-size must be a multiple of 32, got {args.image_size}")
    return args


def print_table(rows):
    width = max(len(row[0]) for row in rows)
    print(f"\n{'metric'.ljust(width)}  {'value':>8}  goal")
    for name, value, goal in rows:
        print(f"{name.ljust(width)}  {value:8.4f}  {goal}")


def main(argv=None):
    args = parse_args(argv)
    import keras_mtl as mtl  # first: it imports TensorFlow without its C++ log lines

    import keras
    from keras_mtl.data import shapes
    from keras_mtl.export_check import check_export
    from keras_mtl.plotting import plot_history
    from keras_mtl.progress import progress
    from keras_mtl.tflite import export_tflite

    os.makedirs(args.output_dir, exist_ok=True)
    keras.utils.set_random_seed(0)
    with_detection = not args.no_detection and hasattr(mtl.tasks, "Detection")
    tasks = shapes.make_tasks(with_detection)
    keep = [task.name for task in tasks]
    train = shapes.make_dataset(args.train_size, image_size=args.image_size,
                                batch_size=args.batch_size, seed=0, shuffle=True, repeat=True,
                                drop_remainder=True, cache=True, tasks=keep)
    val = shapes.make_dataset(args.val_size, image_size=args.image_size,
                              batch_size=args.batch_size, seed=1, cache=True, tasks=keep)

    model = mtl.build_mtl(tasks, trunk=args.trunk, weights=args.weights,
                          input_shape=(args.image_size, args.image_size, 3),
                          weighting=args.weighting)
    total_steps = args.epochs * args.steps
    schedule = keras.optimizers.schedules.CosineDecay(
        args.learning_rate, decay_steps=total_steps)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4),
                  jit_compile=args.jit_compile)
    print(f"keras_mtl {mtl.__version__}: tasks {keep}, trunk {args.trunk} "
          f"({model.trunk.count_params():,} params), model {model.count_params():,} params, "
          f"{args.image_size}px, weighting {args.weighting}, {total_steps} steps")

    if args.analyse:
        from keras_mtl.analysis import analyse

        analyse(model, train, args.output_dir, steps=min(50, total_steps))

    start = time.time()
    history = model.fit(train, validation_data=val, epochs=args.epochs,
                        steps_per_epoch=args.steps, verbose=2 if not sys.stdout.isatty() else 1)
    train_seconds = time.time() - start

    results = model.evaluate(val, verbose=0, return_dict=True)
    rows = [
        (f"{keep[0]}_accuracy", results[f"{keep[0]}_accuracy"], ">= 0.95"),
        (f"{keep[-1]}_miou", results[f"{keep[-1]}_miou"], ">= 0.80"),
    ]
    if with_detection:
        from keras_mtl.evaluation import evaluate_detection

        detection = evaluate_detection(model, val, keep[1])
        results.update({f"{keep[1]}_{k}": v for k, v in detection.items()})
        rows.append((f"{keep[1]}_map50", detection["map50"], ">= 0.80"))
        rows.append((f"{keep[1]}_map", detection["map"], "(COCO mAP@[.5:.95])"))
    rows.append(("train_minutes", train_seconds / 60, "< 10 on 2 CPU cores (defaults)"))
    print_table(rows)

    with open(os.path.join(args.output_dir, "history.json"), "w") as file:
        json.dump({"args": vars(args), "history": history.history, "final": results,
                   "train_seconds": train_seconds}, file, indent=1, default=float)
    plot_history(history, os.path.join(args.output_dir, "curves.png"), task_names=keep)

    export_dir = os.path.join(args.output_dir, "export", "1")
    images = next(iter(val))[0][:4].numpy()
    with_onnx = importlib.util.find_spec("tf2onnx") is not None  # the onnx extra
    with progress("Exporting SavedModel, TFLite" + (" and ONNX" if with_onnx else "")):
        model.export(export_dir, verbose=False)
        exports = [export_dir, export_tflite(export_dir, export_dir + ".tflite")]
        if with_onnx:
            exports.append(model.export(export_dir + ".onnx", format="onnx", verbose=False))
    if not with_onnx:
        print("(ONNX too with the onnx extra: pip install -e \".[onnx]\")")
    print(f"\nExports in {os.path.dirname(export_dir)}/, parity with predict per output:")
    check_export(model, exports, images, verbose=True)
    if with_detection:
        from keras_mtl.plotting import save_prediction_png

        predictions = model.predict(images, verbose=0)
        for index in range(len(images)):
            save_prediction_png(
                os.path.join(args.output_dir, f"prediction_{index}.png"), images[index],
                boxes=predictions[f"{keep[1]}_boxes"][index],
                labels=predictions[f"{keep[1]}_labels"][index],
                scores=predictions[f"{keep[1]}_scores"][index],
                mask=predictions[keep[-1]][index], class_names=shapes.CLASS_NAMES,
            )
    print(f"History, curves and predictions in {args.output_dir}/")
    return results


if __name__ == "__main__":
    main()
