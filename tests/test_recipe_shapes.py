import json
import os
import sys

RECIPES = os.path.join(os.path.dirname(__file__), "..", "recipes")


def test_quick_shapes_recipe_trains_exports_and_writes_outputs(tmp_path, capsys):
    sys.path.insert(0, RECIPES)
    try:
        import shapes as recipe
    finally:
        sys.path.remove(RECIPES)
    results = recipe.main(["--quick", "--output-dir", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "label_accuracy" in printed and "mask_miou" in printed
    assert "parity with predict per output" in printed
    header = next(line for line in printed.splitlines() if line.startswith("output "))
    assert header.split()[-3:] == ["SavedModel", "TFLite", "ONNX"]  # check_export's table
    accuracy_row = [line for line in printed.splitlines() if line.startswith("label_accuracy ")]
    assert f"{results['label_accuracy']:.4f}" in accuracy_row[0]  # the printed value is the result
    with open(tmp_path / "history.json") as file:
        saved = json.load(file)
    assert len(saved["history"]["loss"]) == 2
    assert "weight/label" in saved["history"]
    assert os.path.getsize(tmp_path / "curves.png") > 1000
    assert os.path.exists(tmp_path / "export" / "1" / "saved_model.pb")
    assert os.path.exists(tmp_path / "export" / "1.onnx")
