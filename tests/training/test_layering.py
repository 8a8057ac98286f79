"""`keras_mtl.training` stands below the model: importing its steps never loads model.py."""

import ast
import pathlib
import subprocess
import sys
import textwrap

import keras_mtl

PROBE = textwrap.dedent("""
    import importlib.util, sys, types
    # The package object without running keras_mtl/__init__.py (which imports everything).
    package = types.ModuleType("keras_mtl")
    package.__path__ = [{path!r}]
    sys.modules["keras_mtl"] = package
    import keras_mtl.training.steps
    loaded = sorted(name for name in sys.modules if name.startswith("keras_mtl."))
    print(",".join(loaded))
""")


def test_training_steps_import_without_the_model():
    code = PROBE.format(path=keras_mtl.__path__[0])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, check=True)
    loaded = result.stdout.strip().splitlines()[-1].split(",")
    assert "keras_mtl.training.steps" in loaded
    assert "keras_mtl.model" not in loaded, loaded
    assert not any(name.startswith("keras_mtl.architectures") for name in loaded), loaded


def test_no_function_level_imports_in_training():
    package = pathlib.Path(keras_mtl.training.__file__).parent
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text())
        top_level = {id(node) for node in tree.body}
        nested = [node.lineno for node in ast.walk(tree)
                  if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top_level]
        assert not nested, f"{path.name}: imports inside functions at lines {nested}"
