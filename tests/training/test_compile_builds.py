"""`compile` builds the optimizers, so `fit` traces the train step once."""

import keras
import numpy as np

import keras_mtl
from keras_mtl import tasks


def _model():
    return keras_mtl.build_mtl([tasks.Classification("c", 2), tasks.Segmentation("s", 2)],
                               trunk="micro_resnet", weights=None, input_shape=(32, 32, 3))


def test_compile_builds_the_optimizer_with_every_trainable_variable():
    model = _model()
    model.compile(optimizer="adam")
    assert model.optimizer.built
    assert len(model.optimizer.variables) > 2 * len(model.trainable_variables)  # m and v slots


def test_fit_traces_the_train_step_once():
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    traces = []
    step = model.train_step

    def counting_train_step(data):
        traces.append(1)  # Python side effect: runs once per trace, not per step
        return step(data)

    model.train_step = counting_train_step
    images = np.random.default_rng(0).random((8, 32, 32, 3), dtype="float32")
    targets = {"c": np.zeros(8, "int32"), "s": np.zeros((8, 32, 32), "int32")}
    model.fit(images, targets, batch_size=4, epochs=1, verbose=0)
    assert len(traces) == 1
