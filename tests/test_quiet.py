"""TensorFlow starts without its C++ log lines unless asked (keras_mtl.quiet)."""

import os
import subprocess
import sys

import pytest

from keras_mtl import quiet

CPP_LINES = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1795789087.768532   20146 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.\n"
    "E0000 00:00:1795789163.271657   20595 cuda_platform.cc:52] failed call to cuInit: "
    "INTERNAL: CUDA error\n"
    "2025-09-17 14:44:05.176998: W external/local_xla/xla/stream_executor/cuda/cuda_fft.cc:467] "
    "Unable to register cuFFT factory\n"
)


def test_filtered_stderr_drops_cpp_log_lines_and_keeps_the_rest(capfd):
    with quiet.filtered_stderr():
        os.write(2, ("a warning of ours\n" + CPP_LINES + "Traceback: not a log line\n").encode())
    assert capfd.readouterr().err == "a warning of ours\nTraceback: not a log line\n"


def test_filtered_stderr_shows_every_line_when_the_block_fails(capfd):
    with pytest.raises(ImportError):
        with quiet.filtered_stderr():
            os.write(2, CPP_LINES.encode())
            raise ImportError("no tensorflow")
    assert capfd.readouterr().err == CPP_LINES


@pytest.mark.parametrize("environ, verbose", [
    ({}, False), ({"KERAS_MTL_VERBOSE": "1"}, True), ({"KERAS_MTL_VERBOSE": "0"}, False),
    ({"KERAS_MTL_VERBOSE": "false"}, False), ({"TF_CPP_MIN_LOG_LEVEL": "0"}, True),
    ({"TF_CPP_MIN_LOG_LEVEL": "2"}, False),
])
def test_verbose_requested(environ, verbose):
    assert quiet.verbose_requested(environ) is verbose


def _command_stderr(*options, **env):
    """Stderr lines of `keras-mtl [OPTIONS] evaluate` on a missing model (TensorFlow starts)."""
    environ = {k: v for k, v in os.environ.items()
               if k not in ("TF_CPP_MIN_LOG_LEVEL", quiet.VERBOSE_ENV)}
    result = subprocess.run([sys.executable, "-m", "keras_mtl.cli", *options, "evaluate",
                             "--model", "missing.keras"],
                            env={**environ, **env}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr  # the one-line error, after the start-up
    lines = result.stderr.splitlines(keepends=True)
    assert lines[-1].startswith("keras-mtl evaluate: error: --model 'missing.keras'"), lines
    return lines[:-1]


def test_command_starts_without_tensorflow_log_lines_unless_verbose():
    verbose = [line for line in _command_stderr(KERAS_MTL_VERBOSE="1") if quiet.is_cpp_log_line(line)]
    if not verbose:
        pytest.skip("this TensorFlow prints no C++ log line at start-up: nothing to hide")
    assert _command_stderr() == []
    # --verbose, before or after the command, acts before TensorFlow is imported.
    assert [line for line in _command_stderr("--verbose") if quiet.is_cpp_log_line(line)]
