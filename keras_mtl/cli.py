"""The `keras-mtl` command: train, evaluate, export and predict from the shell.

Examples (`keras-mtl COMMAND --help` explains each command's options):

    keras-mtl train --quick                                  # a smoke test, ~1 min on a CPU
    keras-mtl train --output-dir runs/shapes                 # the shapes recipe's default run
    keras-mtl evaluate --model runs/shapes/model.keras
    keras-mtl export --model runs/shapes/model.keras --output-dir export/shapes/1 \\
        --tflite export/shapes.tflite --quantization int8
    keras-mtl predict --model export/shapes/1 photo1.png photo2.jpg --output predictions.json
    keras-mtl compare --methods equal auto famo --seeds 0 1 2   # leaderboard over seeds

Every option can also come from a JSON (or, with PyYAML installed, YAML)
file: `keras-mtl train --config train.json`, with keys named like the
options (`"image_size": 64` or `"image-size": 64`), either flat or in a
section per command (`{"train": {...}, "export": {...}}`); options on the
command line win over the file.

TensorFlow's C++ start-up log lines are hidden (keras_mtl/quiet.py);
`keras-mtl --verbose COMMAND ...` (or `--verbose` after the command, or
`KERAS_MTL_VERBOSE=1`) shows them. `--help` prints without importing
TensorFlow: the commands import it once their options are parsed.
"""

import argparse
import difflib
import json
import os
import sys

from keras_mtl import cli_data
from keras_mtl.cli_compare import add_compare_command, compare as compare_command
from keras_mtl.progress import progress

COMMANDS = ("train", "evaluate", "export", "predict", "compare")
DATASETS = ("shapes", "pennfudan") + cli_data.SOURCES
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
QUANTIZATIONS = ("none", "dynamic", "int8")

# The shapes recipe's defaults (recipes/shapes.py).
TRAIN_DEFAULTS = dict(
    data="shapes", trunk="tiny_resnet", weights=None, image_size=64, batch_size=32, epochs=12,
    steps=150, train_size=9600, val_size=512, weighting="auto", learning_rate=2e-3,
    weight_decay=1e-4, seed=0, output_dir="runs/shapes",
)
QUICK = dict(epochs=2, steps=3, image_size=32, train_size=64, val_size=32, batch_size=8,
             trunk="micro_resnet")


class CLIError(Exception):
    """A user error the command reports in one line (exit status 1)."""


VERBOSE_HELP = ("show TensorFlow's start-up log lines (as KERAS_MTL_VERBOSE=1 does); also "
                "accepted before the command")


class _TrainVerbose(argparse.Action):
    """`train --verbose [N]`: N (0, 1, 2) is Keras' fit verbosity; alone, the start-up logs."""

    def __call__(self, parser, namespace, values, option_string=None):
        if values is None:
            namespace.startup_logs = True
        else:
            setattr(namespace, self.dest, values)


# --- parser ---------------------------------------------------------------------------
def _data_options(parser, training):
    group = parser.add_argument_group("data")
    group.add_argument("--data", choices=DATASETS, default=None,
                       help="'shapes' (synthetic, made on the fly, no download), 'pennfudan' "
                            "(needs --data-dir), or your own: 'coco' (--images, --annotations) "
                            "or 'folder' (--images, --masks, --labels-csv); default: shapes")
    group.add_argument("--data-dir", default=None,
                       help="folder of the Penn-Fudan data set (with PNGImages/, PedMasks/)")
    cli_data.add_options(group)
    group.add_argument("--batch-size", type=int, default=None,
                       help=f"global batch size (default {TRAIN_DEFAULTS['batch_size']})")
    group.add_argument("--val-size", type=int, default=None,
                       help=f"shapes: held-out images (default {TRAIN_DEFAULTS['val_size']})")
    if training:
        group.add_argument("--train-size", type=int, default=None,
                           help=f"shapes: distinct training images (default "
                                f"{TRAIN_DEFAULTS['train_size']})")
        group.add_argument("--no-detection", action="store_true",
                           help="shapes: train classification + segmentation only")


def build_parser():
    """The `argparse` parser of `keras-mtl` (`train`, `evaluate`, `export`, `predict`, `compare`).

    Imports neither TensorFlow nor Keras.

    Returns:
        An `argparse.ArgumentParser`; its `command_parsers` attribute is the
        dict `{command name: the command's parser}` (for the command's
        `error(...)` and its options).
    """
    parser = argparse.ArgumentParser(
        prog="keras-mtl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False)
    from keras_mtl import __version__

    parser.add_argument("--version", action="version", version=f"keras_mtl {__version__}")
    parser.add_argument("--verbose", dest="startup_logs", action="store_true",
                        help="show TensorFlow's start-up log lines (as KERAS_MTL_VERBOSE=1 does)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    parser.command_parsers = {}

    def command(name, help, description, epilog):
        sub = commands.add_parser(name, help=help, description=description, epilog=epilog,
                                  formatter_class=argparse.RawDescriptionHelpFormatter,
                                  allow_abbrev=False)
        sub.add_argument("--config", metavar="FILE",
                         help="JSON or YAML file of options (keys named like the options); "
                              "command-line options win")
        if name != "train":  # train's --verbose also takes Keras' fit verbosity
            sub.add_argument("--verbose", dest="startup_logs", action="store_true",
                             default=argparse.SUPPRESS, help=VERBOSE_HELP)
        parser.command_parsers[name] = sub
        return sub

    # === train ===
    train = command(
        "train", "train a multi-task model (shapes, Penn-Fudan, or your COCO or folder data)",
        "Trains one model on all the tasks of a data set, evaluates it on held-out images, "
        "prints the metrics and writes OUTPUT_DIR/model.keras (load it with "
        "keras.models.load_model after `import keras_mtl`), OUTPUT_DIR/history.json, a "
        "checkpoint of the last epoch and, with --export, a SavedModel.",
        "examples:\n"
        "  keras-mtl train --quick\n"
        "  keras-mtl train --trunk resnet18 --image-size 64 --epochs 20 --weighting famo\n"
        "  keras-mtl train --data pennfudan --data-dir data/PennFudanPed --image-size 128\n"
        "  keras-mtl train --data coco --images data/images --annotations data/train.json\n"
        "  keras-mtl train --strategy mirrored --logical-cpus 2 --jit-compile   # 2 replicas\n"
        "  keras-mtl train --backup-dir runs/backup --save-freq 50   # run again to resume")
    model = train.add_argument_group("model")
    model.add_argument("--trunk", default=None,
                       help=f"trunk name, see keras_mtl.trunks.names(), or keras_hub:PRESET "
                            f"(a KerasHub preset name or folder) (default "
                            f"{TRAIN_DEFAULTS['trunk']})")
    model.add_argument("--weights", default=None,
                       help="trunk weights: 'imagenet', a file path, or omitted for random")
    model.add_argument("--image-size", type=int, default=None,
                       help=f"square image size in pixels, a multiple of 32 (default "
                            f"{TRAIN_DEFAULTS['image_size']})")
    model.add_argument("--weighting", default=None,
                       help=f"task weighting, see keras_mtl.weighting.names() (default "
                            f"{TRAIN_DEFAULTS['weighting']})")
    _data_options(train, training=True)
    fit = train.add_argument_group("training")
    fit.add_argument("--epochs", type=int, default=None,
                     help=f"default {TRAIN_DEFAULTS['epochs']}")
    fit.add_argument("--steps", type=int, default=None,
                     help=f"steps per epoch (default {TRAIN_DEFAULTS['steps']})")
    fit.add_argument("--learning-rate", type=float, default=None,
                     help=f"AdamW peak learning rate, cosine decay (default "
                          f"{TRAIN_DEFAULTS['learning_rate']})")
    fit.add_argument("--weight-decay", type=float, default=None,
                     help=f"AdamW weight decay (default {TRAIN_DEFAULTS['weight_decay']})")
    fit.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    fit.add_argument("--jit-compile", action="store_true",
                     help="XLA-compile the train step (often slower on CPU, faster on GPU); "
                          "honoured under --strategy too")
    fit.add_argument("--mixed-precision", choices=PRECISIONS, default=None,
                     help="dtype policy (default float32); weights, losses and task weights "
                          "stay float32, mixed_float16 scales the loss")
    fit.add_argument("--strategy", choices=("default", "mirrored", "multi_worker"), default=None,
                     help="tf.distribute strategy: 'mirrored' (all GPUs, or the logical CPUs), "
                          "'multi_worker' (reads TF_CONFIG); --batch-size stays global")
    fit.add_argument("--logical-cpus", type=int, default=None,
                     help="split the CPU into N logical devices (to try --strategy mirrored "
                          "without GPUs)")
    fit.add_argument("--backup-dir", default=None,
                     help="back up the training state there; a killed run started again with "
                          "the same options resumes where it stopped")
    fit.add_argument("--save-freq", type=int, default=None,
                     help="back up every N steps (default: every epoch)")
    fit.add_argument("--quick", action="store_true",
                     help="2 epochs of 3 steps at 32 px with micro_resnet: a smoke test")
    out = train.add_argument_group("output")
    out.add_argument("--output-dir", default=None,
                     help=f"where model, history and checkpoint go (default "
                          f"{TRAIN_DEFAULTS['output_dir']})")
    out.add_argument("--export", action="store_true",
                     help="also export a SavedModel to OUTPUT_DIR/export/1 and check it")
    out.add_argument("--verbose", type=int, choices=(0, 1, 2), default=None, nargs="?",
                     action=_TrainVerbose, metavar="N",
                     help="Keras fit verbosity N (default: 1 on a terminal, else 2); "
                          "--verbose alone: " + VERBOSE_HELP)

    # === evaluate ===
    evaluate = command(
        "evaluate", "evaluate a trained model and print its metrics",
        "Evaluates a .keras model on held-out data (the shapes validation split, seed 1, or "
        "Penn-Fudan's validation split) and prints a table of per-task metrics, with the COCO "
        "box mAP of detection tasks.",
        "example:\n  keras-mtl evaluate --model runs/shapes/model.keras --val-size 500")
    evaluate.add_argument("--model", required=True, help="a .keras file written by train")
    _data_options(evaluate, training=False)
    evaluate.add_argument("--json", default=None, metavar="FILE",
                          help="also write the metrics to this JSON file")

    # === export ===
    export = command(
        "export", "export a SavedModel (and a TFLite file)",
        "Writes a SavedModel serving decoded outputs (signatures serving_default: float32 "
        "pixels, serve_uint8: uint8 pixels) and checks it against the model on sample images; "
        "with --tflite also a TFLite file (float32, dynamic-range or int8 calibrated on the "
        "data), checked against the SavedModel; with --onnx also an ONNX file of the same "
        "outputs, checked with onnxruntime against the model per head. Sizes and largest "
        "differences are printed.",
        "examples:\n"
        "  keras-mtl export --model runs/shapes/model.keras --output-dir export/shapes/1\n"
        "  keras-mtl export --model m.keras --output-dir export/1 --tflite m_int8.tflite "
        "--quantization int8\n"
        "  keras-mtl export --model m.keras --output-dir export/1 --onnx m.onnx")
    export.add_argument("--model", required=True, help="a .keras file written by train")
    export.add_argument("--output-dir", required=True, help="the SavedModel directory to write")
    export.add_argument("--tflite", default=None, metavar="FILE", help="also write this .tflite")
    export.add_argument("--onnx", default=None, metavar="FILE",
                        help='also write this .onnx (needs pip install "keras_mtl[onnx]")')
    export.add_argument("--quantization", choices=QUANTIZATIONS, default=None,
                        help="TFLite quantization (default none = float32); int8 calibrates on "
                             "images of --data")
    export.add_argument("--calibration-images", type=int, default=None,
                        help="images used to calibrate int8 (default 64)")
    _data_options(export, training=False)

    # === predict ===
    predict = command(
        "predict", "run a model on image files and print the decoded outputs as JSON",
        "Runs a SavedModel directory (from export) or a .keras file on PNG/JPEG images. Each "
        "image is resized to the model's input size; class probabilities, detections (boxes in "
        "'input_size' pixels, in the task's box format, above --score-threshold) and "
        "segmentation class counts are printed as JSON (or written with --output); "
        "--masks-dir saves the class maps as PNGs at the image's own size.",
        "example:\n  keras-mtl predict --model export/shapes/1 a.png b.jpg --output out.json")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPEG files")
    predict.add_argument("--model", required=True,
                         help="a SavedModel directory or a .keras file")
    predict.add_argument("--output", default=None, metavar="FILE",
                         help="write the JSON there instead of printing it")
    predict.add_argument("--score-threshold", type=float, default=None,
                         help="keep detections scored at least this (default 0.3)")
    predict.add_argument("--masks-dir", default=None,
                         help="save each segmentation class map as a PNG there")

    # === compare ===
    add_compare_command(command)
    return parser


# --- config files ----------------------------------------------------------------------
def _load_config(path):
    if not os.path.isfile(path):
        raise CLIError(f"config file {path!r} does not exist.")
    with open(path) as file:
        text = file.read()
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError as error:
            raise CLIError(f"config file {path!r} is YAML but PyYAML is not installed; "
                           f"`pip install pyyaml` or write the file as JSON.") from error
        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise CLIError(f"config file {path!r} is not valid YAML: {error}") from error
    else:
        try:
            config = json.loads(text)
        except json.JSONDecodeError as error:
            raise CLIError(f"config file {path!r} is not valid JSON: {error.msg} at line "
                           f"{error.lineno}, column {error.colno}.") from error
    if not isinstance(config, dict):
        raise CLIError(f"config file {path!r} must hold an object of options "
                       f"({{\"epochs\": 3, ...}}), got {type(config).__name__}.")
    return config


def _option_name(action):
    """`"image_size"` for `--image-size`: the key of the option in config files."""
    return action.option_strings[-1].lstrip("-").replace("-", "_")


def _config_tokens(path, command, subparser):
    """Command-line tokens for the options of `command` in config file `path`."""
    config = _load_config(path)
    options = {k: v for k, v in config.items() if k not in COMMANDS}
    section = config.get(command, {})
    if not isinstance(section, dict):
        raise CLIError(f"config file {path!r}: section {command!r} must be an object.")
    options.update(section)
    actions = {_option_name(action): action for action in subparser._actions
               if action.option_strings and action.dest not in ("help", "config")}
    tokens = []
    for key, value in options.items():
        dest = str(key).replace("-", "_")
        if dest not in actions:
            valid = sorted(name.replace("_", "-") for name in actions)
            close = difflib.get_close_matches(str(key).replace("_", "-"), valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise CLIError(f"config file {path!r}: unknown option {key!r} for "
                           f"'keras-mtl {command}'.{hint} Valid options: {', '.join(valid)}.")
        action = actions[dest]
        flag = action.option_strings[-1]
        if value is True and action.nargs == "?":  # train's "verbose": true
            tokens.append(flag)
            continue
        if isinstance(action, argparse._StoreTrueAction):
            if not isinstance(value, bool):
                raise CLIError(f"config file {path!r}: option {key!r} is a switch; use true or "
                               f"false, got {value!r}.")
            if value:
                tokens.append(flag)
            continue
        if value is None:
            continue
        if isinstance(value, (list, dict)) or isinstance(value, bool):
            raise CLIError(f"config file {path!r}: option {key!r} takes one value, got {value!r}.")
        if action.type is not None:
            try:
                action.type(value)
            except (TypeError, ValueError):
                raise CLIError(f"config file {path!r}: option {key!r} must be "
                               f"{getattr(action.type, '__name__', 'valid')}, got {value!r}.")
        if action.choices is not None and value not in action.choices:
            raise CLIError(f"config file {path!r}: option {key!r} must be one of "
                           f"{list(action.choices)}, got {value!r}.")
        tokens += [flag, str(value)]
    return tokens


def parse_args(argv=None):
    """Parses `argv` (default `sys.argv[1:]`), options of `--config` first."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config:
        subparser = parser.command_parsers[args.command]
        try:
            tokens = _config_tokens(args.config, args.command, subparser)
        except CLIError as error:
            subparser.error(str(error))
        index = argv.index(args.command) + 1
        args = parser.parse_args(argv[:index] + tokens + argv[index:])
    return args, parser


# --- data ------------------------------------------------------------------------------
def _train_settings(args, parser):
    settings = dict(TRAIN_DEFAULTS)
    if args.quick:
        settings.update(QUICK)
    for key in list(settings) + ["mixed_precision", "strategy", "logical_cpus", "save_freq",
                                 "backup_dir", "verbose"]:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    sub = parser.command_parsers["train"]
    for key in ("image_size", "batch_size", "epochs", "steps", "train_size", "val_size"):
        if settings[key] < 1:
            sub.error(f"--{key.replace('_', '-')} must be >= 1, got {settings[key]}.")
    if settings["image_size"] % 32:
        sub.error(f"--image-size must be a multiple of 32, got {settings['image_size']}.")
    if settings["data"] == "pennfudan" and not args.data_dir:
        sub.error("--data pennfudan needs --data-dir (the PennFudanPed folder).")
    if settings["data"] in cli_data.SOURCES and cli_data.missing_options(args):
        sub.error(cli_data.missing_options(args))
    if settings.get("save_freq") is not None and not settings.get("backup_dir"):
        sub.error("--save-freq needs --backup-dir.")
    return settings


def _pennfudan():
    try:
        from keras_mtl.data import pennfudan
    except ImportError as error:  # pragma: no cover
        raise CLIError("this keras_mtl has no Penn-Fudan loader (keras_mtl.data.pennfudan).") \
            from error
    return pennfudan


def _check_data_dir(path):
    if not path or not os.path.isdir(path):
        raise CLIError(f"--data-dir {path!r} is not a folder; download PennFudanPed and point "
                       f"to the folder that holds PNGImages/ and PedMasks/.")


def _eval_data(data, data_dir, image_size, batch_size, val_size, task_names, args=None):
    """The held-out data set of `data` for a model with `task_names`."""
    if data in cli_data.SOURCES:
        return cli_data.eval_data(args, image_size, batch_size, task_names, CLIError)
    if data == "pennfudan":
        _check_data_dir(data_dir)
        return _pennfudan().load_pennfudan(data_dir, "val", image_size=image_size,
                                           batch_size=batch_size)
    from keras_mtl.data import shapes

    keep = [name for name in shapes.TASK_NAMES.values() if name in task_names]
    if not keep:
        raise CLIError(f"the model's tasks {list(task_names)} are not shapes tasks "
                       f"{list(shapes.TASK_NAMES.values())}; pass --data pennfudan --data-dir.")
    return shapes.make_dataset(val_size, image_size=image_size, batch_size=batch_size, seed=1,
                               cache=True, tasks=keep)


def _square_size(model):
    height, width = model.image_shape[:2]
    if height != width:
        raise CLIError(f"the data sets are square; the model's input is {height}x{width}.")
    return int(height)


# --- commands --------------------------------------------------------------------------
def _print_table(title, results):
    rows = [(k, v) for k, v in results.items() if isinstance(v, (int, float))]
    width = max([len(title)] + [len(k) for k, _ in rows])
    print(f"\n{title.ljust(width)}  {'value':>10}")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value:10.4f}")


def _metrics(model, val):
    with progress("Evaluating on the held-out data"):
        return _held_out_metrics(model, val)


def _held_out_metrics(model, val):
    results = {k: float(v) for k, v in model.evaluate(val, verbose=0, return_dict=True).items()}
    from keras_mtl.tasks.detection import Detection

    for task in model.tasks:
        if isinstance(task, Detection):
            try:
                from keras_mtl.evaluation import evaluate_detection

                detection = evaluate_detection(model, val, task.name)
            except ImportError as error:  # pycocotools missing
                print(f"(no COCO mAP for '{task.name}': {error})")
                continue
            for key in ("map50", "map"):
                results[f"{task.name}_{key}"] = float(detection[key])
    return results


def train(args, parser):
    settings = _train_settings(args, parser)
    from keras_mtl import distribute

    if settings.get("logical_cpus"):
        try:
            distribute.set_logical_cpus(settings["logical_cpus"])
        except RuntimeError as error:
            raise CLIError(str(error)) from error
    import keras

    import keras_mtl as mtl
    from keras_mtl.callbacks import BackupAndRestore, NonFiniteLossError
    from keras_mtl.callbacks import TerminateOnNonFiniteLoss

    previous_policy = keras.config.dtype_policy()
    try:
        if settings.get("mixed_precision"):
            keras.config.set_dtype_policy(settings["mixed_precision"])
        keras.utils.set_random_seed(settings["seed"])
        strategy = distribute.make_strategy(settings.get("strategy", "default"))
        size, batch = settings["image_size"], settings["batch_size"]
        if settings["data"] in cli_data.SOURCES:
            with progress(f"Reading the {settings['data']} data"):
                tasks, train_data = cli_data.train_data(args, settings, CLIError)
        elif settings["data"] == "pennfudan":
            _check_data_dir(args.data_dir)
            pennfudan = _pennfudan()
            tasks = pennfudan.make_tasks()
            train_data = pennfudan.load_pennfudan(args.data_dir, "train", image_size=size,
                                                  batch_size=batch, repeat=True,
                                                  drop_remainder=True, seed=settings["seed"])
        else:
            from keras_mtl.data import shapes

            tasks = shapes.make_tasks(not args.no_detection)
            train_data = shapes.make_dataset(
                settings["train_size"], image_size=size, batch_size=batch, seed=0, shuffle=True,
                repeat=True, drop_remainder=True, cache=True, tasks=[t.name for t in tasks])
        val = _eval_data(settings["data"], args.data_dir, size, batch, settings["val_size"],
                         [t.name for t in tasks], args)
        try:
            with strategy.scope():
                model = mtl.build_mtl(tasks, trunk=settings["trunk"], weights=settings["weights"],
                                      input_shape=(size, size, 3),
                                      weighting=settings["weighting"])
                total_steps = settings["epochs"] * settings["steps"]
                schedule = keras.optimizers.schedules.CosineDecay(settings["learning_rate"],
                                                                  decay_steps=total_steps)
                model.compile(optimizer=keras.optimizers.AdamW(
                    schedule, weight_decay=settings["weight_decay"]),
                    jit_compile=bool(args.jit_compile))  # explicit: "auto" is off under a strategy
        except ValueError as error:  # unknown trunk / weighting names list the valid ones
            raise CLIError(str(error)) from error
        output_dir = settings["output_dir"]
        chief = distribute.is_chief(strategy)
        os.makedirs(output_dir, exist_ok=True)
        callbacks = [TerminateOnNonFiniteLoss()]  # first: before anything is saved
        if settings.get("backup_dir"):
            callbacks.append(BackupAndRestore(settings["backup_dir"],
                                              save_freq=settings.get("save_freq") or "epoch",
                                              data="continuous"))
        checkpoint = os.path.join(output_dir, "checkpoint.weights.h5")
        if chief:
            callbacks.append(keras.callbacks.ModelCheckpoint(checkpoint, save_weights_only=True))
        print(f"keras_mtl {mtl.__version__}: {settings['data']}, tasks {[t.name for t in tasks]}, "
              f"trunk {settings['trunk']}, {size}px, batch {batch}, weighting "
              f"{settings['weighting']}, {total_steps} steps, {strategy.num_replicas_in_sync} "
              f"replica(s), precision {keras.config.dtype_policy().name}")
        verbose = settings.get("verbose")
        if verbose is None:
            verbose = 1 if sys.stdout.isatty() else 2
        try:
            history = model.fit(train_data, validation_data=val, epochs=settings["epochs"],
                                steps_per_epoch=settings["steps"], callbacks=callbacks,
                                verbose=verbose)
        except NonFiniteLossError as error:
            kept = f" The last good checkpoint is {checkpoint}." if os.path.exists(checkpoint) \
                else ""
            raise CLIError(f"{error}{kept}") from error
        results = _metrics(model, val)
        _print_table("metric (held-out data)", results)
        if chief:
            model.save(os.path.join(output_dir, "model.keras"))
            with open(os.path.join(output_dir, "history.json"), "w") as file:
                json.dump({"settings": settings, "history": history.history, "final": results},
                          file, indent=1, default=float)
            if args.export:
                from keras_mtl.export import check_export

                export_dir = os.path.join(output_dir, "export", "1")
                with progress("Exporting the SavedModel"):
                    model.export(export_dir, verbose=False)
                images = next(iter(val))[0][:4].numpy()
                differences = check_export(model, export_dir, images)
                print(f"SavedModel at {export_dir} (max abs difference to predict "
                      f"{max(differences.values()):.2g}).")
            print(f"Model, history and checkpoint in {output_dir}/")
        return 0
    finally:
        keras.config.set_dtype_policy(previous_policy)


def _load_keras_model(path):
    if not (path.endswith(".keras") and os.path.isfile(path)):
        raise CLIError(f"--model {path!r} is not a .keras file (train writes OUTPUT_DIR/model.keras).")
    import keras

    import keras_mtl  # noqa: F401 (registers the model's classes)

    try:
        model = keras.models.load_model(path)
    except Exception as error:  # noqa: BLE001 (corrupt or foreign file)
        raise CLIError(f"cannot load {path!r}: {error}") from error
    if not hasattr(model, "tasks"):
        raise CLIError(f"{path!r} is not a keras_mtl MultiTaskModel.")
    if not model.compiled:
        model.compile(optimizer="adam")
    return model


def _defaults(args):
    return (args.data or "shapes", args.batch_size or 8, args.val_size or 64)


def evaluate(args, parser):
    model = _load_keras_model(args.model)
    data, batch, val_size = _defaults(args)
    val = _eval_data(data, args.data_dir, _square_size(model), batch, val_size, model.task_names,
                     args)
    results = _metrics(model, val)
    _print_table(f"metric ({data}, held-out)", results)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=1)
    return 0


def export(args, parser):
    model = _load_keras_model(args.model)
    import numpy as np

    from keras_mtl.export import check_export

    data, batch, val_size = _defaults(args)
    try:
        sample = _eval_data(data, args.data_dir, _square_size(model), batch, val_size,
                            model.task_names, args)
    except CLIError:
        if args.quantization == "int8" or args.data:
            raise
        sample = np.random.default_rng(0).integers(
            0, 256, (4, *model.image_shape)).astype("uint8")  # no matching data: random pixels
    images = (next(iter(sample))[0].numpy() if not isinstance(sample, np.ndarray) else sample)[:4]
    with progress("Exporting the SavedModel"):
        model.export(args.output_dir, verbose=False)
    differences = check_export(model, args.output_dir, images)
    size = sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(args.output_dir) for name in names)
    print(f"SavedModel {args.output_dir}: {size / 1024:.1f} KiB, max abs difference to the "
          f"Keras model {max(differences.values()):.3g}")
    if args.tflite:
        from keras_mtl.tflite import check_tflite, export_tflite

        quantization = None if args.quantization in (None, "none") else args.quantization
        with progress(f"Converting to TFLite ({quantization or 'float32'})"):
            export_tflite(model, args.tflite, quantization=quantization,
                          representative_data=sample,
                          num_calibration_images=args.calibration_images or 64)
        report = check_tflite(args.tflite, args.output_dir, images,
                              atol=1e-4 if quantization is None else None, verbose=False)
        print(f"TFLite {args.tflite} ({quantization or 'float32'}): "
              f"{report['size_bytes'] / 1024:.1f} KiB ({report['size_bytes'] / size:.2f}x the "
              f"SavedModel); max abs difference to the SavedModel per output:")
        for name, value in report["max_abs_diff"].items():
            extra = (f" ({100 * report['agreement'][name]:.1f}% equal)"
                     if name in report["agreement"] else "")
            print(f"  {name}: {value:.3g}{extra}")
    if args.onnx:
        try:
            with progress("Converting to ONNX (tf2onnx)"):
                model.export(args.onnx, format="onnx", verbose=False)
        except ImportError as error:  # the onnx extra is not installed
            raise CLIError(str(error)) from error
        print(f"ONNX {args.onnx}: {os.path.getsize(args.onnx) / 1024:.1f} KiB; parity with "
              f"the Keras model per output:")
        check_export(model, [args.output_dir, args.onnx], images, verbose=True)
    return 0


def _read_image(path, size):
    import tensorflow as tf

    if not os.path.isfile(path):
        raise CLIError(f"image {path!r} does not exist.")
    try:
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except tf.errors.InvalidArgumentError as error:
        raise CLIError(f"cannot read image {path!r}: not a PNG, JPEG, GIF or BMP file.") from error
    original = tuple(int(x) for x in image.shape[:2])
    resized = tf.image.resize(tf.cast(image, tf.float32), size)  # bilinear, 0..255 floats
    return tf.clip_by_value(resized, 0.0, 255.0).numpy(), original


def _load_predictor(path):
    """`(predict(images) -> {name: array}, (H, W))` of a SavedModel dir or a .keras file."""
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            raise CLIError(f"--model {path!r} is a folder without saved_model.pb (not a SavedModel).")
        import tensorflow as tf

        served = tf.saved_model.load(path).signatures["serving_default"]
        spec = served.structured_input_signature[1]["images"]
        size = tuple(int(x) for x in spec.shape[1:3])
        return (lambda images: {k: v.numpy() for k, v in
                                served(images=tf.constant(images, tf.float32)).items()}), size
    model = _load_keras_model(path)
    return (lambda images: {k: __import__("numpy").asarray(v) for k, v in
                            model.predict(images, verbose=0).items()}), \
        tuple(int(x) for x in model.image_shape[:2])


def _describe(outputs, index, threshold):
    """The JSON-friendly decoded outputs of image `index`."""
    import numpy as np

    result = {}
    detections = {name[:-len("_num_detections")] for name in outputs
                  if name.endswith("_num_detections")}
    for name in sorted(detections):
        count = int(outputs[f"{name}_num_detections"][index])
        scores = outputs[f"{name}_scores"][index][:count]
        keep = scores >= threshold
        result[name] = {
            "boxes": np.round(outputs[f"{name}_boxes"][index][:count][keep], 2).tolist(),
            "scores": np.round(scores[keep], 4).tolist(),
            "labels": outputs[f"{name}_labels"][index][:count][keep].astype(int).tolist(),
        }
    used = {f"{d}_{s}" for d in detections for s in ("boxes", "scores", "labels",
                                                      "num_detections")}
    for name in sorted(set(outputs) - used):
        value = outputs[name][index]
        if value.ndim == 1 and np.issubdtype(value.dtype, np.floating):  # class probabilities
            result[name] = {"probabilities": np.round(value, 4).tolist(),
                            "class": int(np.argmax(value))}
        elif value.ndim == 2 and np.issubdtype(value.dtype, np.integer):  # a class map
            classes, counts = np.unique(value, return_counts=True)
            result[name] = {"pixels_per_class": {str(int(c)): int(n)
                                                 for c, n in zip(classes, counts)}}
    return result


def predict(args, parser):
    import numpy as np

    run, size = _load_predictor(args.model)
    threshold = 0.3 if args.score_threshold is None else args.score_threshold
    loaded = [_read_image(path, size) for path in args.images]
    outputs = run(np.stack([image for image, _ in loaded]))
    results = []
    for index, (path, (_, original)) in enumerate(zip(args.images, loaded)):
        entry = {"image": path, "image_size": list(original), "input_size": list(size),
                 "outputs": _describe(outputs, index, threshold)}
        if args.masks_dir:
            _save_masks(args.masks_dir, path, outputs, index, original, entry)
        results.append(entry)
    text = json.dumps(results, indent=1)
    if args.output:
        with open(args.output, "w") as file:
            file.write(text + "\n")
        print(f"Predictions of {len(results)} image(s) in {args.output}")
    else:
        print(text)
    return 0


def _save_masks(folder, path, outputs, index, original, entry):
    import numpy as np
    import tensorflow as tf

    os.makedirs(folder, exist_ok=True)
    stem = os.path.splitext(os.path.basename(path))[0]
    for name, value in outputs.items():
        value = value[index]
        if value.ndim == 2 and np.issubdtype(value.dtype, np.integer):
            mask = tf.image.resize(value[..., None].astype("int32"), original, method="nearest")
            target = os.path.join(folder, f"{stem}_{name}.png")
            tf.io.write_file(target, tf.io.encode_png(tf.cast(mask, tf.uint8)))
            entry["outputs"][name]["mask_png"] = target


def _start_tensorflow(verbose=False):
    """Imports TensorFlow and keras_mtl, quietly unless `verbose`.

    The `keras-mtl` command defers `import keras_mtl`'s TensorFlow import
    until its options are parsed (see `keras_mtl/__init__.py`); this
    completes it. `verbose=True` sets `KERAS_MTL_VERBOSE=1` first, so
    TensorFlow's start-up lines show (it has no effect on them once
    TensorFlow is imported, e.g. when `main` is called from Python).
    """
    from keras_mtl import quiet

    if verbose:
        os.environ[quiet.VERBOSE_ENV] = "1"
    import keras_mtl

    keras_mtl._import_all()


def main(argv=None):
    """Runs `keras-mtl` with `argv` (default `sys.argv[1:]`); returns the exit status.

    Bad options exit with status 2 and argparse's usage message; user
    errors found later (missing files, bad images, a non-finite loss) print
    one line `keras-mtl <command>: error: ...` and return 1.
    """
    args, parser = parse_args(argv)
    _start_tensorflow(verbose=args.startup_logs)
    handlers = {"train": train, "evaluate": evaluate, "export": export, "predict": predict,
                "compare": lambda a, p: compare_command(a, p, CLIError)}
    try:
        return handlers[args.command](args, parser)
    except CLIError as error:
        print(f"keras-mtl {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
