"""A quiet TensorFlow start-up: no C++ log lines before the first line of ours.

Importing TensorFlow 2.21 on a machine without CUDA prints six or seven
lines from C++ (the absl pre-initialisation banner, `cudart_stub` twice,
`cpu_feature_guard`, and `cuInit` when the devices are listed). Some come
through absl before `TF_CPP_MIN_LOG_LEVEL` is read, so that variable alone
does not hide them (tensorflow#100442). `quiet_tensorflow()` therefore:

1. sets `TF_CPP_MIN_LOG_LEVEL=2` (C++ errors still show, info and warnings
   do not) unless the user set it;
2. imports TensorFlow and lists its devices with file descriptor 2 sent to
   a temporary file, then writes back every line of it that is not a C++
   log line (a Python warning printed meanwhile still shows; everything
   shows if the import fails).

`import keras_mtl` calls it first thing, so the `keras-mtl` command (after
parsing its options) and the recipes start quietly. It does nothing when
TensorFlow was imported before, and `KERAS_MTL_VERBOSE=1` (or an explicit
`TF_CPP_MIN_LOG_LEVEL=0`, or the command's `--verbose`) brings every line
back:

    KERAS_MTL_VERBOSE=1 keras-mtl train --quick
    keras-mtl --verbose train --quick

Example:

>>> is_cpp_log_line("I0000 00:00:1795789087.768532   20146 cudart_stub.cc:31] Could not find")
True
>>> is_cpp_log_line("Epoch 1/2")
False

Every line back, in Python (before anything imports TensorFlow):

```python
import os
os.environ["KERAS_MTL_VERBOSE"] = "1"
import keras_mtl
```
"""

import contextlib
import os
import re
import sys
import tempfile

VERBOSE_ENV = "KERAS_MTL_VERBOSE"
_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"

# absl's "I0000 00:00:1795789087.768532 20146 cudart_stub.cc:31] ..." (I, W or E), TSL's
# "2026-11-27 14:44:05.157831: I external/.../cudart_stub.cc:32] ...", and
# absl's banner before InitializeLog().
_CPP_LOG_LINE = re.compile(
    r"^(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]\s]+:\d+\] "
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] [^\]\s]+:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
    r"STDERR$)"
)


def is_cpp_log_line(line):
    """Whether `line` is an info, warning or error line of TensorFlow's C++ logging."""
    return bool(_CPP_LOG_LINE.match(line))


def verbose_requested(environ=None):
    """Whether the user asked for TensorFlow's start-up logs.

    True when `KERAS_MTL_VERBOSE` is set to anything but `""`, `"0"`,
    `"false"` or `"no"`, or when `TF_CPP_MIN_LOG_LEVEL` is set to `"0"`.
    """
    environ = os.environ if environ is None else environ
    if environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no"):
        return True
    return environ.get(_LEVEL_ENV, "").strip() == "0"


@contextlib.contextmanager
def filtered_stderr(keep=lambda line: not is_cpp_log_line(line)):
    """Sends file descriptor 2 (C and C++ writes too) to a file for the block.

    On exit the lines for which `keep(line)` is true are written to
    `sys.stderr`; all lines are, if the block raised.

    Args:
        keep: a predicate on one line of text (with its newline).
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no fd 2 (e.g. pythonw): nothing to filter
        yield
        return
    failed = False
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode("utf-8", "replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if failed or keep(line)))
            sys.stderr.flush()


def quiet_tensorflow():
    """Imports TensorFlow without its C++ start-up log lines.

    Returns:
        True if it imported TensorFlow quietly; False when TensorFlow was
        already imported or `verbose_requested()` (then nothing changes).
    """
    if "tensorflow" in sys.modules or verbose_requested():
        return False
    os.environ.setdefault(_LEVEL_ENV, "2")
    with filtered_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()  # CUDA's cuInit line; devices stay configurable
    return True
