"""The progress line of the long steps: what runs, then done and the time, or failed."""

import io

import pytest

from keras_mtl.progress import progress


def test_progress_line_says_done_with_the_time():
    stream = io.StringIO()
    with progress("Evaluating", stream=stream):
        assert stream.getvalue() == "Evaluating ..."  # shown while the block runs
    line = stream.getvalue()
    assert line.startswith("Evaluating ... done (") and line.endswith(" s)\n")


def test_progress_line_says_failed_and_the_error_goes_on():
    stream = io.StringIO()
    with pytest.raises(ValueError, match="bad"):
        with progress("Exporting", stream=stream):
            raise ValueError("bad")
    assert stream.getvalue() == "Exporting ... failed\n"
