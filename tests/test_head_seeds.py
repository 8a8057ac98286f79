"""A task head starts from the same weights alone and in a multi-task model."""

import keras
import numpy as np
import pytest

import keras_mtl
from keras_mtl import tasks


def _tasks():
    return [tasks.Classification("scene", 3), tasks.Detection("boxes", 2),
            tasks.Segmentation("mask", 2)]


def _weights_by_path(model):
    return {variable.path: variable.numpy() for variable in model.weights}


@pytest.mark.parametrize("architecture", ["hps", "mtan"])
def test_head_initialization_does_not_depend_on_the_other_tasks(architecture):
    keras.utils.set_random_seed(7)
    single = keras_mtl.build_single_task(tasks.Segmentation("mask", 2), trunk="micro_resnet",
                                         weights=None, input_shape=(32, 32, 3))
    keras.utils.set_random_seed(7)
    multi = keras_mtl.build_mtl(_tasks(), trunk="micro_resnet", weights=None,
                                input_shape=(32, 32, 3), architecture=architecture)
    alone, together = _weights_by_path(single), _weights_by_path(multi)
    mask_head = [path for path in alone if path.startswith("mask_")]
    trunk = [path for path in alone if not path.startswith("mask_") and path in together]
    assert mask_head and len(trunk) > 10  # the weighting's variables are not compared
    for path in mask_head + trunk:
        np.testing.assert_array_equal(alone[path], together[path], err_msg=path)


def test_heads_of_one_model_differ_and_seeds_matter():
    def mask_kernel(seed, names):
        keras.utils.set_random_seed(seed)
        model = keras_mtl.build_mtl([tasks.Segmentation(name, 2) for name in names],
                                    trunk="micro_resnet", weights=None, input_shape=(32, 32, 3))
        return {name: model.get_layer(f"{name}_logits").kernel.numpy() for name in names}

    two = mask_kernel(1, ["left", "right"])
    assert not np.array_equal(two["left"], two["right"])  # seeded by name, not one seed
    assert not np.array_equal(two["left"], mask_kernel(2, ["left", "right"])["left"])
    np.testing.assert_array_equal(two["right"], mask_kernel(1, ["right"])["right"])
