"""TaskWeightTrace: the logged task weights at evenly spaced steps."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_mtl
from keras_mtl import weighting as weighting_lib
from keras_mtl.callbacks import TaskWeightTrace
from keras_mtl.tasks import Classification


def test_steps_are_evenly_spaced_and_end_at_the_last():
    assert TaskWeightTrace(total_steps=10, points=3).steps == [4, 7, 10]
    assert TaskWeightTrace(total_steps=2, points=9).steps == [1, 2]
    with pytest.raises(ValueError, match="total_steps >= 1"):
        TaskWeightTrace(total_steps=0)


def test_trace_of_a_fit_holds_the_weights_of_those_steps(conv_trunk):
    model = keras_mtl.build_mtl([Classification("a", 3), Classification("b", 2)],
                                trunk=conv_trunk(), weights=None, input_shape=(32, 32, 3),
                                weighting=weighting_lib.get("calibrated", calibration_steps=2))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (16, 32, 32, 3)).astype("uint8")  # (16, 32, 32, 3)
    targets = {"a": rng.integers(0, 3, 16).astype("int32"), "b": rng.integers(0, 2, 16).astype("int32")}
    model.compile(optimizer=keras.optimizers.SGD(1e-3), jit_compile=False)
    trace = TaskWeightTrace(total_steps=4, points=2)
    model.fit(images, targets, batch_size=4, epochs=1, verbose=0, callbacks=[trace])
    assert [step for step, _ in trace.trace] == [2, 4]
    # Calibrated over 2 steps, then held: the weights of step 2 are those of step 4, and the last.
    last = ops.convert_to_numpy(model.weighting.current_weights())
    for _, weights in trace.trace:
        assert set(weights) == {"a", "b"}
        np.testing.assert_allclose([weights["a"], weights["b"]], last, rtol=1e-6)
    assert last[0] != last[1]  # the tasks' gradient norms differ
