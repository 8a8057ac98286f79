"""Task heads whose initial weights do not depend on the model's other tasks.

Keras initializers take their seeds from Python's `random` when a layer is
created (`keras.utils.set_random_seed` seeds it), so without care a head's
initial weights depend on how many layers were created before it: the
`person` head of a three-task model starts from different weights than the
same head in its single-task baseline, even with the same seed. On
Penn-Fudan (96 px, 400 steps, 3 seeds) that alone moved the person IoU by
0.02-0.06, as much as the effect of multi-task training being measured.

`MultiTaskModel` draws one base seed from Python's `random` just before it
wires the architecture (`head_seed_scope`), and architectures create each
head with `build_head`, which seeds Python's `random` from the base and the
task's name while the head's layers are made and then restores it. A head
therefore starts from the same weights in every model built from the same
global seed (after the same trunk), whatever the other tasks are, and the
layers made after it draw as if it had not been made.
"""

import contextlib
import random
import threading
import zlib

_SCOPE = threading.local()


@contextlib.contextmanager
def head_seed_scope():
    """Heads built inside (with `build_head`) are seeded from one base drawn here.

    Example (a head starts the same alone and after another task's head):

    >>> def head_weights(names):
    ...     keras.utils.set_random_seed(3)
    ...     inputs = {"P5": keras.Input((1, 1, 8))}
    ...     with head_seed_scope():
    ...         outputs = [build_head(tasks.Classification(name, 2), inputs, None)
    ...                    for name in names]
    ...     return keras.Model(inputs, outputs[-1]).get_weights()
    >>> alone, after_b = head_weights(["a"]), head_weights(["b", "a"])
    >>> all(np.array_equal(x, y) for x, y in zip(alone, after_b))
    True
    """
    previous = getattr(_SCOPE, "base", None)
    _SCOPE.base = random.randint(1, 2**31 - 1)
    try:
        yield _SCOPE.base
    finally:
        _SCOPE.base = previous


def task_seed(base, task_name):
    """The seed of task `task_name`'s head under base seed `base` (stable across runs)."""
    return zlib.crc32(f"{base}:{task_name}".encode("utf-8"))


def build_head(task, features, image_shape):
    """`task.build_head(features, image_shape)`, seeded by the task's name in a scope.

    Outside `head_seed_scope` this is `task.build_head` unchanged. Inside,
    Python's `random` is seeded with `task_seed(base, task.name)` while the
    head is made and restored afterwards.

    Args:
        task: a `keras_mtl.tasks.Task`.
        features: what the architecture feeds the head.
        image_shape: `(H, W, 3)`.

    Returns:
        The head's output tensor.
    """
    base = getattr(_SCOPE, "base", None)
    if base is None:
        return task.build_head(features, image_shape)
    state = random.getstate()
    random.seed(task_seed(base, task.name))
    try:
        return task.build_head(features, image_shape)
    finally:
        random.setstate(state)
