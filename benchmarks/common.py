"""What the benchmark parts share: settings, result rows, models, train steps."""

import dataclasses
import gc
import os
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PENNFUDAN_ROOT = os.path.join(REPO_ROOT, "..", "shared", "data", "PennFudanPed")


@dataclasses.dataclass
class Settings:
    """How big and how long: one object handed to every part."""

    quick: bool = False
    image_size: int = 64
    batch_size: int = 32
    trunk: str = "tiny_resnet"
    warmup: int = 3  # untimed calls after the first (tracing) call
    repeats: int = 7  # interleaved blocks per side
    steps: int = 3  # calls per block
    pennfudan_size: int = 128  # as recipes/pennfudan.py
    pennfudan_batch: int = 16

    @classmethod
    def make(cls, quick=False, **overrides):
        """Full-run defaults, or `--quick` ones; `None` overrides are ignored."""
        values = dict(quick=quick)
        if quick:
            values.update(image_size=32, batch_size=8, trunk="micro_resnet", warmup=1,
                          repeats=5, steps=1, pennfudan_size=64, pennfudan_batch=4)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclasses.dataclass
class Row:
    """One line of the table.

    `goal` is `None` (informational) or `(op, bound)` with op `"<="` or
    `">="`; `status` is PASS/MISS when there is a goal and a value, "-"
    when there is no goal, "n/a" when there is no value, or a word set by
    the part (e.g. "n/a (CPU)").
    """

    part: str
    key: str
    label: str
    value: float = None
    unit: str = ""
    goal: tuple = None
    status: str = None
    note: str = ""

    def __post_init__(self):
        if self.status is None:
            if self.value is None:
                self.status = "n/a"
            elif self.goal is None:
                self.status = "-"
            else:
                op, bound = self.goal
                ok = self.value <= bound if op == "<=" else self.value >= bound
                self.status = "PASS" if ok else "MISS"

    def formatted_value(self):
        if self.value is None:
            return "n/a"
        return format_value(self.value, self.unit)

    def formatted_goal(self):
        if self.goal is None:
            return ""
        op, bound = self.goal
        sign = {"<=": "≤", ">=": "≥"}[op]
        return f"{sign} {format_value(bound, self.unit)}"

    def as_dict(self):
        data = dataclasses.asdict(self)
        data["goal"] = list(self.goal) if self.goal else None
        return data


def format_value(value, unit):
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "ms":
        return f"{value:.1f} ms" if value >= 10 else f"{value:.2f} ms"
    if unit == "s":
        return f"{value:.1f} s"
    if unit == "img/s":
        return f"{value:,.0f} img/s"
    if unit == "%":
        return f"{value:.0f}%"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "":
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:.3g}"
    return f"{value:.3g} {unit}"


@dataclasses.dataclass
class PartResult:
    rows: list
    data: dict
    seconds: float = 0.0


def progress(message):
    """Progress goes to stderr, so stdout stays the Markdown report."""
    import sys

    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def reset(seed=0):
    """Frees the previous part's models and seeds the next."""
    import keras

    keras.backend.clear_session()
    gc.collect()
    keras.utils.set_random_seed(seed)


# --- tasks, data, models ----------------------------------------------------------------
def shapes_tasks(keys=None):
    """The shapes data set's tasks, by target key (default all available).

    Returns `[Classification("label"), Detection("objects"), Segmentation("mask")]`
    (Detection left out when keras_mtl has none).
    """
    import keras_mtl as mtl
    from keras_mtl.data import shapes

    names = shapes.TASK_NAMES
    makers = {
        names["classification"]: lambda: mtl.tasks.Classification(
            names["classification"], shapes.NUM_CLASSES),
        names["segmentation"]: lambda: mtl.tasks.Segmentation(
            names["segmentation"], shapes.NUM_SEGMENTATION_CLASSES),
    }
    if hasattr(mtl.tasks, "Detection"):
        makers[names["detection"]] = lambda: mtl.tasks.Detection(
            names["detection"], shapes.NUM_CLASSES)
    order = [names["classification"], names["detection"], names["segmentation"]]
    keys = [k for k in order if k in makers] if keys is None else list(keys)
    return [makers[key]() for key in keys]


def shapes_batch(settings, keys, seed=0):
    """One fixed shapes batch `(float32 images, {key: target})` for `keys`."""
    import tensorflow as tf
    from keras_mtl.data import shapes

    dataset = shapes.make_dataset(settings.batch_size, image_size=settings.image_size,
                                  batch_size=settings.batch_size, seed=seed, tasks=list(keys))
    images, targets = next(iter(dataset))
    return tf.cast(images, tf.float32), targets


def subset(batch, keys):
    images, targets = batch
    return images, {key: targets[key] for key in keys}


def build_model(settings, tasks, weighting="equal", jit_compile=False, seed=0, name=None):
    """A compiled `MultiTaskModel` (Adam 1e-3) on the settings' trunk and size."""
    import keras

    import keras_mtl as mtl

    keras.utils.set_random_seed(seed)
    model = mtl.build_mtl(tasks, trunk=settings.trunk, weights=None,
                          input_shape=(settings.image_size, settings.image_size, 3),
                          weighting=weighting, name=name or "multi_task_model")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit_compile)
    return model


class TrainStep:
    """One train step of a compiled model on a fixed batch, as `fit` runs it.

    Calls the model's compiled train function (`make_train_function`, what
    `fit` calls once per step) on an iterator that repeats one batch held in
    memory, so the input pipeline costs (almost) nothing; the optimizer is
    built beforehand as `fit` does. Each call waits for the step's loss.
    `first()` makes and times the first call (tracing, graph optimisation,
    XLA compilation and one step).
    """

    def __init__(self, model, batch):
        import tensorflow as tf

        self.model = model
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        self.iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
        model.make_train_function()
        self.function = model.train_function
        self.first_call_s = None

    def __call__(self):
        import tensorflow as tf

        logs = self.function(self.iterator)
        tf.nest.flatten(logs)[0].numpy()  # wait for the step

    def first(self):
        start = time.perf_counter()
        self()
        self.first_call_s = time.perf_counter() - start
        return self.first_call_s


def count_params(model):
    return int(sum(int(v.numpy().size) for v in model.trainable_variables))
