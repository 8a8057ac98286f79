import math

import numpy as np
import pytest

import keras_mtl as mtl
from keras_mtl import tasks
from keras_mtl.data import shapes
from keras_mtl.evaluation import Comparison, RunResult, compare, delta_m, delta_m_per_task
from keras_mtl.evaluation import evaluate_tasks, train_and_evaluate


def test_hand_worked_example_averages_metrics_within_then_across_tasks():
    # Task "seg": mIoU 0.60 -> 0.66 (+10 %), pixel accuracy 0.80 -> 0.76 (-5 %): mean +2.5 %.
    # Task "depth": RMSE 0.50 -> 0.40, lower is better: +20 %.
    # Task "cls": accuracy 0.90 -> 0.81: -10 %.
    # delta_m = (2.5 + 20 - 10) / 3 = 4.1666...
    mtl_metrics = {"seg": {"miou": 0.66, "pixel_acc": 0.76}, "depth": {"rmse": 0.40},
                   "cls": {"accuracy": 0.81}}
    single = {"seg": {"miou": 0.60, "pixel_acc": 0.80}, "depth": {"rmse": 0.50},
              "cls": {"accuracy": 0.90}, "unused": {"accuracy": 1.0}}
    higher = {"miou": True, "pixel_acc": True, "rmse": False, "accuracy": True}
    assert delta_m(mtl_metrics, single, higher) == pytest.approx(12.5 / 3)
    per_task = delta_m_per_task(mtl_metrics, single, higher)
    assert per_task["seg"]["metrics"] == pytest.approx({"miou": 10.0, "pixel_acc": -5.0})
    assert per_task["seg"]["delta"] == pytest.approx(2.5)
    assert per_task["depth"]["delta"] == pytest.approx(20.0)
    # Averaging all four metrics at once would give (10 - 5 + 20 - 10) / 4 = 3.75: not the convention.
    assert delta_m(mtl_metrics, single, higher) != pytest.approx(3.75)


def test_directions_default_from_names_and_can_be_given_per_task():
    assert delta_m({"a": {"map50": 0.55}}, {"a": {"map50": 0.5}}) == pytest.approx(10.0)
    assert delta_m({"a": {"loss": 0.55}}, {"a": {"loss": 0.5}}) == pytest.approx(-10.0)
    assert delta_m({"a": {"iou_person": 0.4}}, {"a": {"iou_person": 0.5}}) == pytest.approx(-20.0)
    per_task = {"a": {"err": False}}
    assert delta_m({"a": {"err": 2.0}}, {"a": {"err": 4.0}}, per_task) == pytest.approx(50.0)
    assert delta_m({"a": 3.0, "b": 1.0}, {"a": 2.0, "b": 1.0}, True) == pytest.approx(25.0)
    assert delta_m({"a": 3.0}, {"a": 2.0}, False) == pytest.approx(-50.0)


def test_errors_are_explicit():
    with pytest.raises(ValueError, match="higher_is_better"):
        delta_m({"a": {"wobble": 1.0}}, {"a": {"wobble": 2.0}})
    with pytest.raises(ValueError, match="No single-task metrics for task 'b'"):
        delta_m({"b": {"accuracy": 1.0}}, {"a": {"accuracy": 1.0}})
    with pytest.raises(ValueError, match="non-zero"):
        delta_m({"a": {"map": 0.1}}, {"a": {"map": 0.0}})
    with pytest.raises(ValueError, match="lack 'miou'"):
        delta_m({"a": {"miou": 0.1}}, {"a": {"accuracy": 0.2}})


class _Fixed:
    """A stand-in model: `decode` of fixed outputs, for evaluate_tasks."""

    def __init__(self, task_list, outputs):
        self.tasks, self.outputs, self.image_shape = task_list, outputs, (4, 4, 3)

    def __call__(self, images, training=False):
        return {}

    def decode(self, _):
        return self.outputs


def test_evaluate_tasks_counts_only_labelled_examples_and_pixels():
    task_list = [tasks.Classification("c", 3), tasks.Segmentation("s", 2)]
    probs = np.array([[0.9, 0.1, 0.0], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.7, 0.2, 0.1]])
    seg = np.zeros((4, 4, 4), np.int32)
    seg[:, :, 2:] = 1  # predicts class 1 on the right half
    truth = np.zeros((4, 4, 4), np.int32)
    truth[:, :, 1:] = 1  # true class 1 on the right three quarters
    truth[3] = 255  # image 3 unlabelled
    model = _Fixed(task_list, {"c": probs, "s": seg})
    batch = (np.zeros((4, 4, 4, 3), np.uint8),
             {"c": np.array([0, 1, 1, -1]), "s": truth},
             {"c": np.array([1.0, 1.0, 1.0, 1.0]), "s": np.array([1.0, 1.0, 0.0, 1.0])})
    metrics = evaluate_tasks(model, [batch], class_names={"s": ("bg", "fg")})
    assert metrics["c"]["accuracy"] == pytest.approx(2 / 3)  # label -1 skipped
    # images 0, 1 count: per image bg IoU = 4/8, fg IoU = 8/12
    assert metrics["s"]["iou_bg"] == pytest.approx(0.5)
    assert metrics["s"]["iou_fg"] == pytest.approx(8 / 12)
    assert metrics["s"]["miou"] == pytest.approx((0.5 + 8 / 12) / 2)
    assert metrics["s"]["accuracy"] == pytest.approx(12 / 16)


def _run(name, metrics, params, seconds, model=None):
    return RunResult(name=name, model=model, metrics=metrics, params=params,
                     train_seconds=seconds, steps=100, batch_size=8)


def test_comparison_table_puts_metrics_delta_m_and_costs_side_by_side():
    multi = _run("multi_task", {"c": {"accuracy": 0.9}, "s": {"miou": 0.55, "accuracy": 0.8}},
                 150, 30.0)
    singles = {"c": _run("c", {"c": {"accuracy": 0.8}}, 100, 25.0),
               "s": _run("s", {"s": {"miou": 0.5, "accuracy": 0.9}}, 110, 35.0)}
    values = {"c": {"accuracy": 0.9}, "s": {"miou": 0.55}}
    base = {"c": {"accuracy": 0.8}, "s": {"miou": 0.5}}
    per_task = delta_m_per_task(values, base)
    result = Comparison(multi_task=multi, single_task=singles,
                        delta_metrics={"c": ("accuracy",), "s": ("miou",)},
                        delta_m=delta_m(values, base), delta_per_task=per_task)
    assert result.delta_m == pytest.approx((12.5 + 10.0) / 2)
    assert result.train_time_ratio == pytest.approx(0.5)
    table = result.table()
    lines = table.splitlines()
    row = [line for line in lines if line.startswith("s ") and "miou *" in line]
    assert row and "0.5500" in row[0] and "0.5000" in row[0] and "+10.00%" in row[0]
    # pixel accuracy is shown but not in delta-m: no star, its own relative difference
    row = [line for line in lines if line.startswith("s ") and "accuracy" in line]
    assert "*" not in row[0] and "-11.11%" in row[0]
    assert "+11.25%" in table and "0.71x" in table and "0.50x" in table  # params 150 / 210
    assert result.to_dict()["delta_metrics"] == {"c": ["accuracy"], "s": ["miou"]}


def test_train_and_evaluate_times_training_and_scores_the_validation_set():
    model = mtl.build_mtl([tasks.Classification("label", 3), tasks.Segmentation("mask", 4)],
                          trunk="micro_resnet", weights=None, input_shape=(32, 32, 3))
    train = shapes.make_dataset(16, image_size=32, batch_size=8, tasks=["label", "mask"],
                                repeat=True)
    val = shapes.make_dataset(8, image_size=32, batch_size=8, seed=1, tasks=["label", "mask"])
    run = train_and_evaluate(model, train, val, epochs=1, steps_per_epoch=2, name="mtl")
    assert run.name == "mtl" and run.steps == 2 and run.batch_size == 8
    assert 0 < run.train_seconds and run.train_images_per_second == pytest.approx(
        16 / run.train_seconds)
    assert set(run.metrics) == {"label", "mask"}
    images, targets = next(iter(val))
    predicted = np.argmax(model.predict(images, verbose=0)["label"], axis=-1)  # (8,)
    expected = np.mean(predicted == targets["label"].numpy().reshape(-1))
    assert run.metrics["label"]["accuracy"] == pytest.approx(expected)
    assert set(run.metrics["mask"]) == {"miou", "accuracy", "iou_0", "iou_1", "iou_2", "iou_3"}
    state = sum(int(np.prod(v.shape)) for v in model.weighting.variables)  # not parameters
    assert "val_mask_loss" in run.history and run.params == model.count_params() - state


@pytest.mark.slow
def test_compare_trains_baselines_and_prints_one_table(capsys):
    task_list = [tasks.Classification("label", 3), tasks.Segmentation("mask", 4)]
    train = shapes.make_dataset(32, image_size=32, batch_size=8, tasks=["label", "mask"],
                                repeat=True)
    val = shapes.make_dataset(16, image_size=32, batch_size=16, seed=1, tasks=["label", "mask"])
    result = compare(task_list, train, val, trunk="micro_resnet", input_shape=(32, 32, 3),
                     epochs=1, steps_per_epoch=2, efficiency=False)
    table = capsys.readouterr().out
    assert "accuracy *" in table and "miou *" in table and "delta-m" in table
    assert "training time (2 steps each)" in table and "FLOPs" not in table
    assert sorted(result.single_task) == ["label", "mask"]
    for run in [result.multi_task, *result.single_task.values()]:
        assert run.steps == 2 and run.train_seconds > 0 and run.batch_size == 8
    single = result.single_task["label"]
    assert sorted(single.metrics) == ["label"]  # a baseline has one task
    assert len(single.model.tasks) == 1 and single.model.tasks[0].name == "label"
    pairs = (("label", "accuracy"), ("mask", "miou"))
    mtl_values = {t: {m: result.multi_task.metrics[t][m]} for t, m in pairs}
    single_values = {t: {m: result.single_task[t].metrics[t][m]} for t, m in pairs}
    if all(single_values[t][m] > 0 for t, m in pairs):
        assert result.delta_m == pytest.approx(delta_m(mtl_values, single_values))
    else:  # a baseline scored 0 after 2 steps: delta-m is undefined, and says so
        assert math.isnan(result.delta_m) and "undefined" in table
    trunk_params = mtl.trunks.get("micro_resnet", input_shape=(32, 32, 3)).count_params()
    total = sum(run.params for run in result.single_task.values())
    assert total - result.multi_task.params == trunk_params  # one trunk saved
    assert result.efficiency is None
    summary = result.to_dict()
    assert summary["train_time_ratio"] == pytest.approx(
        result.multi_task.train_seconds / sum(r.train_seconds for r in result.single_task.values()))
    assert summary["single_task"]["mask"]["metrics"] == result.single_task["mask"].metrics
