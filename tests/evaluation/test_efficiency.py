import keras
import pytest

import keras_mtl as mtl
from keras_mtl import tasks
from keras_mtl.evaluation import count_params, efficiency_report, flops_per_image
from keras_mtl.evaluation import images_per_second


def _conv(input_shape, filters, kernel, strides=1, padding="same", use_bias=False):
    inputs = keras.Input(input_shape)
    outputs = keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding,
                                  use_bias=use_bias)(inputs)
    return keras.Model(inputs, outputs)


def test_flops_of_a_single_conv2d_match_the_hand_count():
    # 16x16 output, 8 filters, each output a 3x3x3 = 27-term multiply-add: 2 FLOPs each.
    assert flops_per_image(_conv((16, 16, 3), 8, 3)) == 2 * 16 * 16 * 8 * 27
    # 5x5 kernel, stride 2, valid: (16 - 5) // 2 + 1 = 6 -> 6x6x4 outputs, each 5x5x2 = 50
    # multiply-adds, plus one bias add each.
    model = _conv((16, 16, 2), 4, 5, strides=2, padding="valid", use_bias=True)
    assert flops_per_image(model) == 2 * 6 * 6 * 4 * 50 + 6 * 6 * 4
    assert count_params(model) == 5 * 5 * 2 * 4 + 4


def test_flops_do_not_depend_on_the_batch_and_add_up_over_layers():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 1, use_bias=False)(inputs)  # 2 * 64 * 4 * 3 = 1536
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(5, use_bias=False)(x)  # 2 * 4 * 5 = 40
    model = keras.Model(inputs, outputs)
    flops = flops_per_image(model)
    assert 1536 + 40 <= flops <= 1536 + 40 + 8 * 8 * 4 + 8  # + the average pooling's adds


@pytest.fixture(scope="module")
def models():
    task_list = [tasks.Classification("label", 3), tasks.Segmentation("mask", 4),
                 tasks.Detection("objects", 2)]
    shape = (32, 32, 3)
    multi = mtl.build_mtl(task_list, trunk="micro_resnet", weights=None, input_shape=shape)
    singles = {t.name: mtl.build_single_task(type(t).from_config(t.get_config()),
                                             trunk="micro_resnet", weights=None,
                                             input_shape=shape) for t in task_list}
    trunk = mtl.trunks.get("micro_resnet", input_shape=shape)
    return multi, singles, trunk


def test_multi_task_model_saves_two_trunks_of_params_and_flops(models):
    multi, singles, trunk = models
    report = efficiency_report(multi, singles, measure_speed=False)
    total = report["single_task_sum"]
    assert total["params"] - report["multi_task"]["params"] == 2 * trunk.count_params()
    assert total["params"] == sum(count_params(m) for m in singles.values())
    trunk_flops = flops_per_image(trunk)
    assert total["flops"] - report["multi_task"]["flops"] == pytest.approx(2 * trunk_flops,
                                                                           rel=0.02)
    assert report["ratio"]["params"] == pytest.approx(
        report["multi_task"]["params"] / total["params"])
    assert report["multi_task"]["images_per_second"] is None
    assert report["ratio"]["images_per_second"] is None and report["ratio"]["flops"] < 1


def test_images_per_second_of_models_run_one_after_the_other(models):
    multi, singles, _ = models
    two = {name: singles[name] for name in ("label", "mask")}
    report = efficiency_report(multi, list(two.values()), batch_size=2, steps=1, repeats=1)
    speeds = [s["images_per_second"] for s in report["single_task"].values()]
    assert min(speeds) > 0 and report["multi_task"]["images_per_second"] > 0
    total = report["single_task_sum"]["images_per_second"]
    assert total == pytest.approx(1.0 / sum(1.0 / s for s in speeds))
    assert total < min(speeds)
    assert images_per_second(multi, batch_size=2, steps=1, warmup=1, repeats=1, decode=False) > 0
