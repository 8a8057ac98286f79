"""`keras-mtl ... --data coco|folder`: a user's own data on the command line.

    keras-mtl train --data coco --images DIR --annotations FILE [--label-field NAME]
                    [--labels-csv FILE] [--val-annotations FILE [--val-images DIR]]
    keras-mtl train --data folder --images DIR [--masks DIR] [--mask-suffix _mask]
                    [--labels-csv FILE]

The tasks (names and class counts) come from the data
(`keras_mtl.data.DatasetInfo`); training writes them to
`OUTPUT_DIR/data_info.json`. Without a validation file, every fifth image
(in file-name order) is held out. `evaluate` and `export` take the same
data options. TensorFlow is imported only when data is loaded.
"""

import os

SOURCES = ("coco", "folder")


def add_options(group):
    """Adds the options of `--data coco` and `--data folder` to an argparse group."""
    group.add_argument("--images", default=None, metavar="DIR",
                       help="coco/folder: the folder of images")
    group.add_argument("--annotations", default=None, metavar="FILE",
                       help="coco: the COCO-format JSON (boxes, polygon/RLE masks, categories)")
    group.add_argument("--val-annotations", default=None, metavar="FILE",
                       help="coco: a separate validation JSON (default: every fifth image of "
                            "--annotations is held out)")
    group.add_argument("--val-images", default=None, metavar="DIR",
                       help="coco: the images of --val-annotations (default --images)")
    group.add_argument("--masks", default=None, metavar="DIR",
                       help="folder: mask PNGs of class ids (NAME<suffix>.png, 255 = unlabelled)")
    group.add_argument("--mask-suffix", default="", metavar="TEXT",
                       help="folder: what follows the image name in a mask's name, e.g. _mask")
    group.add_argument("--labels-csv", default=None, metavar="FILE",
                       help="coco/folder: CSV of image labels, file_name,<label>,... (one "
                            "classification task per column)")
    group.add_argument("--label-field", action="append", default=None, metavar="NAME",
                       help="coco: an image field holding an image label (repeatable)")
    group.add_argument("--resize", choices=("letterbox", "stretch"), default="letterbox",
                       help="coco/folder: keep the aspect ratio and pad (default), or stretch")


def missing_options(args):
    """What `--data coco|folder` lacks in `args` (a message), or None."""
    if args.data == "coco" and not (args.images and args.annotations):
        return "--data coco needs --images DIR and --annotations FILE."
    if args.data == "folder" and not (args.images and (args.masks or args.labels_csv)):
        return "--data folder needs --images DIR and --masks DIR and/or --labels-csv FILE."
    return None


def _load(args, split, image_size, batch_size, fail, **kwargs):
    """`(dataset, info)` of one split of the data named by `args`."""
    from keras_mtl.data import DataError, load_coco_json, load_image_folder

    if missing_options(args):
        raise fail(missing_options(args))
    common = dict(image_size=image_size, batch_size=batch_size, resize=args.resize,
                  labels_csv=args.labels_csv, with_info=True, **kwargs)
    try:
        if args.data == "folder":
            return load_image_folder(args.images, masks_dir=args.masks, split=split,
                                     mask_suffix=args.mask_suffix, **common)
        images, annotations = args.images, args.annotations
        if args.val_annotations:
            if split == "val":
                images, annotations = args.val_images or args.images, args.val_annotations
            split = "all"
        return load_coco_json(images, annotations, split=split,
                              label_fields=args.label_field or (), **common)
    except (DataError, ValueError, ImportError) as error:
        raise fail(str(error)) from error


def train_data(args, settings, fail):
    """`(tasks, training dataset)` for `keras-mtl train`; writes `data_info.json`.

    Args:
        args: the parsed options.
        settings: the training settings (`image_size`, `batch_size`, `seed`, `output_dir`).
        fail: the exception class to raise for bad data (the CLI's error).
    """
    data, info = _load(args, "train", settings["image_size"], settings["batch_size"], fail,
                       repeat=True, drop_remainder=True, seed=settings["seed"])
    os.makedirs(settings["output_dir"], exist_ok=True)
    info.save(os.path.join(settings["output_dir"], "data_info.json"))
    counts = {name: len(info.class_names(name)) for name in info.task_names}
    summary = ", ".join(f"{name} ({n} class{'es' if n > 1 else ''})" for name, n in counts.items())
    print(f"{args.data} data: {info.num_examples} training images; tasks {summary}")
    return info.make_tasks(), data


def _check_same_classes(args, info, fail):
    """`--val-annotations` must number categories and labels as `--annotations` does."""
    from keras_mtl.data import DataError, coco

    try:
        train = coco.read_coco_json(args.annotations, args.images)
        labels = coco.image_labels(train["images"], args.label_field or (), args.labels_csv,
                                   repr(args.annotations))
    except DataError as error:
        raise fail(str(error)) from error
    expected = {name: names for name, (_, names) in labels.items()}
    found = {name: info.class_names(name) for name in expected if name in info.tasks}
    if train["category_ids"] != info.category_ids or expected != found:
        raise fail(f"--val-annotations {args.val_annotations!r} numbers the classes differently "
                   f"from --annotations {args.annotations!r}: category ids "
                   f"{list(info.category_ids)} vs {list(train['category_ids'])}, labels {found} "
                   f"vs {expected}; give both files the same categories and label values.")


def eval_data(args, image_size, batch_size, task_names, fail):
    """The held-out dataset of the data named by `args`, for a model with `task_names`."""
    data, info = _load(args, "val", image_size, batch_size, fail)
    if args.data == "coco" and args.val_annotations:
        _check_same_classes(args, info, fail)
    missing = [name for name in task_names if name not in info.task_names]
    if missing:
        raise fail(f"the model's task(s) {missing} are not in the {args.data} data, which has "
                   f"{info.task_names}.")
    if len(task_names) == len(info.task_names):
        return data
    return data.map(lambda images, targets: (images, {n: targets[n] for n in task_names}))
