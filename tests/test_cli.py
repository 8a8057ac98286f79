"""The `keras-mtl` command, in-process: help, config files, clear errors, and each
subcommand on a tiny run (micro_resnet, 32 px, 2 steps)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_mtl import cli, quiet
from keras_mtl.data import shapes

TINY = ["--trunk", "micro_resnet", "--image-size", "32", "--epochs", "1", "--steps", "2",
        "--batch-size", "4", "--train-size", "8", "--val-size", "8", "--verbose", "0"]


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """A mistaken run writes its default `runs/` folder there, not into the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny training run, options partly from a JSON config; returns its output dir."""
    folder = tmp_path_factory.mktemp("cli")
    config = folder / "train.json"
    config.write_text(json.dumps({"train": {"weighting": "famo", "learning_rate": 3e-3,
                                            "export": True}}))
    output = str(folder / "run")
    assert cli.main(["train", "--config", str(config), *TINY, "--output-dir", output]) == 0
    return folder, output


def _image_files(folder, count=2):
    images = next(iter(shapes.make_dataset(count, image_size=48, batch_size=count, seed=5)))[0]
    paths = []
    for index, image in enumerate(images):
        path = str(folder / f"image{index}.png")
        tf.io.write_file(path, tf.io.encode_png(image))
        paths.append(path)
    return paths


def test_train_writes_model_history_checkpoint_and_savedmodel(trained, capsys):
    _, output = trained
    for name in ("model.keras", "history.json", "checkpoint.weights.h5",
                 os.path.join("export", "1", "saved_model.pb")):
        assert os.path.exists(os.path.join(output, name)), name
    history = json.load(open(os.path.join(output, "history.json")))
    assert history["settings"]["weighting"] == "famo"  # from the config file
    assert history["settings"]["learning_rate"] == 3e-3
    assert "weight/label" in history["history"]
    assert {"label_accuracy", "mask_miou", "objects_map50"} <= set(history["final"])


def test_evaluate_prints_the_metrics_table(trained, capsys, tmp_path):
    _, output = trained
    target = str(tmp_path / "metrics.json")
    assert cli.main(["evaluate", "--model", os.path.join(output, "model.keras"),
                     "--val-size", "8", "--json", target]) == 0
    printed = capsys.readouterr().out
    for name in ("label_accuracy", "mask_miou", "objects_map50", "objects_loss"):
        assert name in printed
    assert "label_accuracy" in json.load(open(target))


def test_export_savedmodel(trained, capsys, tmp_path):
    _, output = trained
    saved = str(tmp_path / "export" / "1")
    assert cli.main(["export", "--model", os.path.join(output, "model.keras"),
                     "--output-dir", saved, "--val-size", "8"]) == 0
    printed = capsys.readouterr().out
    assert os.path.exists(os.path.join(saved, "saved_model.pb"))
    assert "SavedModel" in printed and "KiB" in printed and "max abs difference" in printed


@pytest.mark.slow  # an ONNX conversion; tests/test_onnx.py checks the parity in the default run
def test_export_onnx_prints_the_parity_table(trained, capsys, tmp_path):
    _, output = trained
    onnx = str(tmp_path / "model.onnx")
    assert cli.main(["export", "--model", os.path.join(output, "model.keras"),
                     "--output-dir", str(tmp_path / "export" / "1"), "--onnx", onnx,
                     "--val-size", "8"]) == 0
    printed = capsys.readouterr().out
    assert os.path.getsize(onnx) > 1000
    header = next(line for line in printed.splitlines() if line.startswith("output "))
    assert header.split()[-2:] == ["SavedModel", "ONNX"]
    assert "objects_num_detections" in printed and "share of pixels differing" in printed


@pytest.mark.slow
@pytest.mark.parametrize("quantization", ["none", "int8"])
def test_export_tflite(trained, capsys, tmp_path, quantization):
    _, output = trained
    saved = str(tmp_path / "export" / "1")
    tflite = str(tmp_path / "model.tflite")
    assert cli.main(["export", "--model", os.path.join(output, "model.keras"),
                     "--output-dir", saved, "--tflite", tflite, "--val-size", "8",
                     "--quantization", quantization]) == 0
    printed = capsys.readouterr().out
    assert os.path.exists(tflite)
    assert f"({'float32' if quantization == 'none' else 'int8'})" in printed
    assert "objects_boxes" in printed and "the SavedModel" in printed


def test_predict_with_savedmodel_and_keras_file(trained, capsys, tmp_path):
    folder, output = trained
    paths = _image_files(tmp_path)  # 48 px images: resized to the model's 32 px
    results = {}
    for model in (os.path.join(output, "export", "1"), os.path.join(output, "model.keras")):
        target = str(tmp_path / "out.json")
        assert cli.main(["predict", "--model", model, *paths, "--output", target,
                         "--score-threshold", "0", "--masks-dir", str(tmp_path / "masks")]) == 0
        results[model] = json.load(open(target))
    first, second = results.values()
    assert [entry["image"] for entry in first] == paths
    entry = first[0]
    assert entry["image_size"] == [48, 48] and entry["input_size"] == [32, 32]
    outputs = entry["outputs"]
    assert len(outputs["label"]["probabilities"]) == 3
    assert sum(outputs["mask"]["pixels_per_class"].values()) == 32 * 32
    assert set(outputs["objects"]) == {"boxes", "scores", "labels"}
    mask = tf.io.decode_png(tf.io.read_file(outputs["mask"]["mask_png"]))
    assert mask.shape == (48, 48, 1)
    # The SavedModel and the .keras file agree.
    assert np.allclose(first[1]["outputs"]["label"]["probabilities"],
                       second[1]["outputs"]["label"]["probabilities"], atol=1e-3)
    assert (first[1]["outputs"]["mask"]["pixels_per_class"]
            == second[1]["outputs"]["mask"]["pixels_per_class"])


# --- help and errors --------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["evaluate", "--help"],
                                  ["export", "--help"], ["predict", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 0
    printed = capsys.readouterr().out
    assert "usage: keras-mtl" in printed
    assert "example" in printed.lower()  # every page shows how to run it


def _run_command(*argv, env=None):
    """`python -X importtime -m keras_mtl.cli ARGV`: (exit status, stdout, imported modules)."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "keras_mtl.cli", *argv],
                            capture_output=True, text=True, timeout=120, env=env)
    modules = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
               if line.startswith("import time:")}
    return result.returncode, result.stdout, modules


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["predict", "--help"],
                                  ["--verbose", "compare", "--help"], ["--version"]])
def test_help_imports_neither_tensorflow_nor_keras(argv):
    code, printed, modules = _run_command(*argv)
    assert code == 0, printed
    assert "keras_mtl.cli_data" in modules  # importtime did list the imports
    heavy = sorted(m for m in modules if m.split(".")[0] in ("tensorflow", "keras", "numpy"))
    assert not heavy, f"`keras-mtl {' '.join(argv)}` imported {heavy[:5]}"
    if argv == ["--help"]:
        for command in cli.COMMANDS:
            assert f"\n    {command} " in printed, command
        assert "--verbose" in printed


def test_console_script_help_leaves_tensorflow_unimported():
    # What the `keras-mtl` script does (its sys.argv[0] ends in keras-mtl), then --help.
    script = ("import sys\n"
              "sys.argv[0] = 'bin/keras-mtl'\n"
              "from keras_mtl.cli import main\n"
              "try:\n"
              "    main(['train', '--help'])\n"
              "except SystemExit as exit:\n"
              "    assert exit.code == 0, exit.code\n"
              "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage: keras-mtl train" in result.stdout
    assert result.stdout.splitlines()[-1] == "False False"


@pytest.mark.parametrize("argv, startup_logs, fit_verbose", [
    (["train"], False, None),
    (["--verbose", "train"], True, None),
    (["train", "--verbose"], True, None),
    (["train", "--verbose", "--epochs", "3"], True, None),
    (["train", "--verbose", "0"], False, 0),  # Keras' fit verbosity, as before
    (["--verbose", "train", "--verbose", "2"], True, 2),
    (["evaluate", "--model", "m.keras"], False, None),
    (["--verbose", "evaluate", "--model", "m.keras"], True, None),
    (["export", "--model", "m.keras", "--output-dir", "e", "--verbose"], True, None),
    (["predict", "--verbose", "--model", "e", "a.png"], True, None),
    (["compare", "--verbose", "--report-only"], True, None),
])
def test_verbose_flag_before_or_after_the_command(argv, startup_logs, fit_verbose):
    args, _ = cli.parse_args(argv)
    assert args.startup_logs is startup_logs
    assert getattr(args, "verbose", None) == fit_verbose


def test_verbose_in_a_config_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"verbose": true, "train": {"verbose": 2}}')
    args, _ = cli.parse_args(["evaluate", "--model", "m.keras", "--config", str(path)])
    assert args.startup_logs is True
    args, _ = cli.parse_args(["train", "--config", str(path)])
    assert (args.startup_logs, args.verbose) == (False, 2)  # the section wins


def test_verbose_asks_for_the_startup_logs_before_the_command_runs(monkeypatch, capsys,
                                                                    tmp_path):
    monkeypatch.setenv(quiet.VERBOSE_ENV, "0")  # restored after the test
    assert cli.main(["evaluate", "--model", str(tmp_path / "none.keras")]) == 1
    assert os.environ[quiet.VERBOSE_ENV] == "0"
    assert cli.main(["--verbose", "evaluate", "--model", str(tmp_path / "none.keras")]) == 1
    assert quiet.verbose_requested()  # what quiet_tensorflow() reads before importing TF
    assert "is not a .keras file" in capsys.readouterr().err


def test_subcommand_parsers_are_kept_by_name():
    parser = cli.build_parser()
    assert sorted(parser.command_parsers) == sorted(cli.COMMANDS)
    assert parser.command_parsers["train"].prog == "keras-mtl train"


def _error(argv, capsys, code=2):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == code
    return capsys.readouterr().err


def test_bad_options_get_clear_errors(capsys, tmp_path):
    assert "invalid choice: 'fit'" in _error(["fit"], capsys)
    assert "unrecognized arguments: --epoch" in _error(["train", "--epoch", "3"], capsys)
    assert "multiple of 32" in _error(["train", "--image-size", "33"], capsys)
    assert "--epochs must be >= 1" in _error(["train", "--epochs", "0"], capsys)
    assert "needs --data-dir" in _error(["train", "--data", "pennfudan"], capsys)
    assert "--save-freq needs --backup-dir" in _error(["train", "--save-freq", "5"], capsys)
    assert "required: --model" in _error(["evaluate"], capsys)


def test_bad_config_files_get_clear_errors(capsys, tmp_path):
    def config(text, name="c.json"):
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    err = _error(["train", "--config", config('{"epoch": 3}')], capsys)
    assert "unknown option 'epoch'" in err and "Did you mean 'epochs'?" in err
    err = _error(["train", "--config", config('{"epochs": 3,}')], capsys)
    assert "not valid JSON" in err and "line 1" in err
    err = _error(["train", "--config", config('{"epochs": "ten"}')], capsys)
    assert "'epochs' must be int, got 'ten'" in err
    err = _error(["train", "--config", config('{"jit_compile": "yes"}')], capsys)
    assert "is a switch" in err
    err = _error(["train", "--config", config('{"strategy": "tpu"}')], capsys)
    assert "must be one of" in err
    err = _error(["train", "--config", config('[1, 2]')], capsys)
    assert "must hold an object" in err
    err = _error(["train", "--config", str(tmp_path / "missing.json")], capsys)
    assert "does not exist" in err
    try:
        import yaml  # noqa: F401
    except ImportError:
        err = _error(["train", "--config", config("epochs: 3", "c.yaml")], capsys)
        assert "PyYAML is not installed" in err
    # A section of another command is ignored; the flat keys apply.
    args, _ = cli.parse_args(["train", "--config", config(
        '{"epochs": 4, "export": {"quantization": "int8"}, "train": {"steps": 7}}'),
        "--steps", "9"])
    assert (args.epochs, args.steps) == (4, 9)  # the command line wins


def test_runtime_errors_return_1_with_one_line(capsys, tmp_path):
    assert cli.main(["evaluate", "--model", str(tmp_path / "none.keras")]) == 1
    assert "is not a .keras file" in capsys.readouterr().err
    assert cli.main(["predict", "--model", str(tmp_path), "x.png"]) == 1
    assert "without saved_model.pb" in capsys.readouterr().err
    assert cli.main(["train", *TINY, "--trunk", "no_such_trunk",
                     "--output-dir", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("keras-mtl train: error:") and "no_such_trunk" in err


def test_predict_rejects_a_file_that_is_not_an_image(trained, capsys, tmp_path):
    _, output = trained
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    assert cli.main(["predict", "--model", os.path.join(output, "export", "1"), str(bad)]) == 1
    assert "cannot read image" in capsys.readouterr().err


def test_console_script_entry_point():
    from importlib.metadata import entry_points

    # `pip install -e .` (the README and .ci/run) installs the `keras-mtl` command.
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("keras-mtl") == "keras_mtl.cli:main", "reinstall: pip install -e ."
