"""`keras-mtl compare`: a multi-seed leaderboard of weightings against single-task models.

Trains single-task baselines and one multi-task model per method for every
seed (`keras_mtl.evaluation.leaderboard.run_leaderboard`), appends each run
to a JSONL file as it ends (run the same command again to resume), and
writes the table (Markdown), a JSON summary and a PNG beside the file.
"""

import importlib
import importlib.util
import os

DEFAULTS = dict(data="shapes", trunk="micro_resnet", image_size=64, batch_size=16, steps=300,
                seeds=[0, 1, 2], methods=["equal", "auto"], learning_rate=2e-3,
                weight_decay=1e-4, results="runs/compare/leaderboard.jsonl")


def add_compare_command(command):
    """Adds the `compare` subcommand with `command(name, help, description, epilog)`."""
    sub = command(
        "compare", "rank weightings over seeds against single-task baselines",
        "Trains, for every seed, one single-task model per task and one multi-task model per "
        "method on the same batches; prints delta-m per method with a 95% confidence interval "
        "over seeds, the per-task change and the training-time ratio. Results are appended to "
        "--results as each run ends; the same command run again skips finished runs.",
        "methods: NAME[:OPTION,...][@ARCHITECTURE], e.g. famo, imtl:rep_grad, static:person=8, "
        "equal@mtan\n"
        "examples:\n"
        "  keras-mtl compare --methods equal auto famo --seeds 0 1 2 --steps 300\n"
        "  keras-mtl compare --data pennfudan --data-dir PennFudanPed --image-size 96 "
        "--trunk small_resnet --steps 400\n"
        "  keras-mtl compare --data my_project.data:leaderboard_data --methods equal auto\n"
        "  keras-mtl compare --results runs/compare/leaderboard.jsonl --report-only")
    sub.add_argument("--data", default=None,
                     help="'shapes', 'pennfudan', or MODULE:FUNCTION (or path/file.py:FUNCTION) "
                          "where FUNCTION(seed) returns a keras_mtl.evaluation.LeaderboardData "
                          "(default shapes)")
    sub.add_argument("--data-dir", default=None, help="the PennFudanPed folder")
    sub.add_argument("--methods", nargs="+", default=None,
                     help=f"weighting methods (default {' '.join(DEFAULTS['methods'])})")
    sub.add_argument("--seeds", nargs="+", type=int, default=None, help="default 0 1 2")
    sub.add_argument("--steps", type=int, default=None,
                     help=f"training steps of every run (default {DEFAULTS['steps']})")
    sub.add_argument("--trunk", default=None, help=f"default {DEFAULTS['trunk']}")
    sub.add_argument("--weights", default=None, help="trunk weights ('imagenet' or a path)")
    sub.add_argument("--image-size", type=int, default=None,
                     help=f"shapes and pennfudan (default {DEFAULTS['image_size']})")
    sub.add_argument("--batch-size", type=int, default=None,
                     help=f"shapes and pennfudan (default {DEFAULTS['batch_size']})")
    sub.add_argument("--segmentation-head-convs", type=int, default=None, metavar="N",
                     help="shapes and pennfudan: extra 3x3 convolutions of the mask head "
                          "(keras_mtl.tasks.Segmentation head_convs; default: the task's)")
    sub.add_argument("--cross-validation", action="store_true",
                     help="pennfudan: seed s validates on fold s %% 5")
    sub.add_argument("--learning-rate", type=float, default=None,
                     help=f"AdamW peak learning rate, cosine decay (default "
                          f"{DEFAULTS['learning_rate']})")
    sub.add_argument("--weight-decay", type=float, default=None,
                     help=f"default {DEFAULTS['weight_decay']}")
    sub.add_argument("--same-compute", nargs="*", default=[], metavar="METHOD",
                     help="also train these methods for the summed single-task time")
    sub.add_argument("--results", default=None,
                     help=f"JSONL results file (default {DEFAULTS['results']})")
    sub.add_argument("--report-only", action="store_true",
                     help="write the table of the results file; train nothing")
    sub.add_argument("--paired-with", default=None, metavar="METHOD",
                     help="the method of the table's paired column (default: equal)")
    return sub


def _settings(args):
    settings = dict(DEFAULTS)
    for key in list(DEFAULTS):
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    return settings


def load_factory(spec, error):
    """The data factory named by `MODULE:FUNCTION` or `path/to/file.py:FUNCTION`."""
    module_name, _, function = spec.rpartition(":")
    if not module_name or not function:
        raise error(f"--data {spec!r}: use shapes, pennfudan or MODULE:FUNCTION.")
    try:
        if module_name.endswith(".py"):
            if not os.path.isfile(module_name):
                raise error(f"--data: no file {module_name!r}.")
            module_spec = importlib.util.spec_from_file_location("user_data", module_name)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as exception:
        raise error(f"--data: cannot import {module_name!r}: {exception}") from exception
    if not callable(getattr(module, function, None)):
        raise error(f"--data: {module_name!r} has no function {function!r}.")
    return getattr(module, function)


def compare(args, parser, error):
    """Runs the `compare` command; `error` is the CLI's one-line user-error exception."""
    from keras_mtl.evaluation import leaderboard as lb

    settings = _settings(args)
    sub = parser.command_parsers["compare"]
    results = settings["results"]
    output_dir = os.path.dirname(os.path.abspath(results))
    name = os.path.splitext(os.path.basename(results))[0]
    if args.report_only:
        if not os.path.exists(results):
            raise error(f"--results {results!r} does not exist: nothing to report.")
        try:
            board = lb.leaderboard_from_file(results, methods=args.methods, seeds=args.seeds)
        except ValueError as exception:
            raise error(str(exception)) from exception
    else:
        for key in ("steps", "image_size", "batch_size"):
            if settings[key] < 1:
                sub.error(f"--{key.replace('_', '-')} must be >= 1, got {settings[key]}.")
        if settings["image_size"] % 32:
            sub.error(f"--image-size must be a multiple of 32, got {settings['image_size']}.")
        factory = _factory(settings, args, sub, error)
        import keras

        def optimizer(total_steps):
            schedule = keras.optimizers.schedules.CosineDecay(settings["learning_rate"],
                                                              max(1, total_steps))
            return keras.optimizers.AdamW(schedule, weight_decay=settings["weight_decay"])

        try:
            board = lb.run_leaderboard(
                factory, settings["methods"], settings["seeds"], settings["steps"], results,
                trunk=settings["trunk"], weights=args.weights, optimizer=optimizer,
                same_compute=args.same_compute,
                tag=f"adamw lr={settings['learning_rate']} wd={settings['weight_decay']} cosine",
                progress=lambda line: print(line, flush=True))
        except ValueError as exception:
            raise error(str(exception)) from exception
    try:
        paths = lb.write_report(board, output_dir, name, reference=args.paired_with)
    except ValueError as exception:
        raise error(f"--paired-with: {exception}") from exception
    print(board.report_markdown(reference=args.paired_with))
    print(f"written: {', '.join(paths.values())}")
    return 0


def _factory(settings, args, sub, error):
    data = settings["data"]
    head_convs = args.segmentation_head_convs
    if head_convs is not None and data not in ("shapes", "pennfudan"):
        sub.error("--segmentation-head-convs applies to --data shapes and pennfudan only; "
                  "a factory of your own builds its own tasks.")
    if head_convs is not None and head_convs < 0:
        sub.error(f"--segmentation-head-convs must be >= 0, got {head_convs}.")
    segmentation_kwargs = None if head_convs is None else {"head_convs": head_convs}
    if data == "shapes":
        from keras_mtl.data import shapes

        return shapes.leaderboard_factory(image_size=settings["image_size"],
                                          batch_size=settings["batch_size"],
                                          segmentation_kwargs=segmentation_kwargs)
    if data == "pennfudan":
        if not args.data_dir or not os.path.isdir(args.data_dir):
            sub.error("--data pennfudan needs --data-dir (the PennFudanPed folder).")
        from keras_mtl.data import pennfudan

        return pennfudan.leaderboard_factory(args.data_dir, image_size=settings["image_size"],
                                             batch_size=settings["batch_size"],
                                             cross_validation=args.cross_validation,
                                             segmentation_kwargs=segmentation_kwargs)
    return load_factory(data, error)
