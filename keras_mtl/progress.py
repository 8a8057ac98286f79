"""A progress line for the long steps of the command line and the recipes.

Reading annotations, evaluating (COCO mAP included) and exporting take
seconds to minutes with nothing from Keras on the terminal; `progress`
says what is running and, when it ends, how long it took:

    Exporting ONNX (tf2onnx) ... done (12.3 s)

`fit` has Keras' own progress bar.
"""

import contextlib
import sys
import time


@contextlib.contextmanager
def progress(message, stream=None):
    """Prints `message ...` when the block starts and ` done (N s)` when it ends.

    The line is flushed at once, so it shows while the block runs; if the
    block raises, the line ends with ` failed` and the error goes on.

    Args:
        message: what the block does, e.g. `"Evaluating"`.
        stream: a text stream; `sys.stdout` by default.

    Example:

    >>> with progress("Adding up"):
    ...     total = sum(range(10))
    Adding up ... done (... s)
    """
    stream = sys.stdout if stream is None else stream
    print(f"{message} ...", end="", file=stream, flush=True)
    start = time.perf_counter()
    try:
        yield
    except BaseException:
        print(" failed", file=stream, flush=True)
        raise
    print(f" done ({time.perf_counter() - start:.1f} s)", file=stream, flush=True)
