"""What a loader read from a user's data: its tasks, their class names, the id mapping."""

import dataclasses
import json

KINDS = ("classification", "detection", "segmentation")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """The tasks of a data set read from files, and how its labels were numbered.

    Returned by `load_coco_json(..., with_info=True)` and
    `load_image_folder(..., with_info=True)`; `make_tasks()` builds the
    matching `keras_mtl.tasks`, `save()` records it beside a trained model.

    Args:
        tasks: `{task name: (kind, class names)}` in task order, kind one of
            `KINDS`. Segmentation class names start with the background.
        category_ids: COCO category id of each contiguous detection class
            (`category_ids[i]` is class `i`); empty for other sources.
        bounding_box_format: the detection boxes' format.
        ignore_index: the mask value of unlabelled pixels.
        image_size: `(height, width)` of the examples.
        num_examples: examples in the loaded split.
        source: a short description of the files read.

    Example:

    >>> info = DatasetInfo({"campus": ("classification", ("Fudan", "Penn")),
    ...                     "mask": ("segmentation", ("background", "person"))})
    >>> [(t.name, t.num_classes) for t in info.make_tasks()]
    [('campus', 2), ('mask', 2)]
    """

    tasks: dict
    category_ids: tuple = ()
    bounding_box_format: str = "xyxy"
    ignore_index: int = 255
    image_size: tuple = ()
    num_examples: int = 0
    source: str = ""

    def __post_init__(self):
        for name, (kind, _) in self.tasks.items():
            if kind not in KINDS:
                raise ValueError(f"Task {name!r}: unknown kind {kind!r}; use one of {KINDS}.")

    @property
    def task_names(self):
        """The task names, in order."""
        return list(self.tasks)

    def class_names(self, name):
        """The class names of task `name` (a tuple)."""
        return tuple(self.tasks[name][1])

    def make_tasks(self, detection_kwargs=None, segmentation_kwargs=None,
                   classification_kwargs=None):
        """`keras_mtl.tasks` for every task, with class counts from the data.

        Args:
            detection_kwargs, segmentation_kwargs, classification_kwargs:
                optional extra constructor arguments per kind.

        Returns:
            A list of `Classification`, `Detection` and `Segmentation`
            tasks named and sized as the data.
        """
        from keras_mtl import tasks

        made = []
        for name, (kind, names) in self.tasks.items():
            if kind == "classification":
                made.append(tasks.Classification(name, num_classes=len(names),
                                                 **(classification_kwargs or {})))
            elif kind == "detection":
                made.append(tasks.Detection(name, num_classes=len(names),
                                            bounding_box_format=self.bounding_box_format,
                                            **(detection_kwargs or {})))
            else:
                made.append(tasks.Segmentation(name, num_classes=len(names),
                                               ignore_index=self.ignore_index,
                                               **(segmentation_kwargs or {})))
        return made

    def get_config(self):
        """A JSON-friendly dict; `DatasetInfo.from_config` reverses it."""
        config = dataclasses.asdict(self)
        config["tasks"] = {name: {"kind": kind, "class_names": list(names)}
                           for name, (kind, names) in self.tasks.items()}
        config["category_ids"] = list(self.category_ids)
        config["image_size"] = list(self.image_size)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["tasks"] = {name: (task["kind"], tuple(task["class_names"]))
                           for name, task in config["tasks"].items()}
        config["category_ids"] = tuple(config.get("category_ids", ()))
        config["image_size"] = tuple(config.get("image_size", ()))
        return cls(**config)

    def save(self, path):
        """Writes `get_config()` as JSON to `path`."""
        with open(path, "w") as file:
            json.dump(self.get_config(), file, indent=1)
