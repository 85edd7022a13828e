"""The `tfcnn` console script: lists its commands, runs each as `python -m tfcnn.COMMAND` does, and
imports no TensorFlow of its own (nor does `import tfcnn`)."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tfcnn import cli

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
# The script pip writes into the venv (`pip install -e .`); else the same entry point through python -m.
SCRIPT = shutil.which("tfcnn", path=str(Path(sys.executable).parent))
TFCNN = [SCRIPT] if SCRIPT else [sys.executable, "-m", "tfcnn.cli"]
HEAVY = {"tensorflow", "keras", "tf_keras"}


def _run(*args, cwd=REPO):
    return subprocess.run([*map(str, args)], env=ENV, cwd=cwd, capture_output=True, text=True, timeout=300)


def _heavy_after(code):
    """The heavy frameworks imported once `code` ran in a fresh interpreter."""
    done = _run(sys.executable, "-c", code + "\nimport sys, json\n"
                "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    assert done.returncode == 0, done.stderr
    return HEAVY & set(json.loads(done.stdout.splitlines()[-1]))


def test_help_lists_every_command_on_one_line():
    done = _run(*TFCNN, "--help")
    assert done.returncode == 0 and done.stderr == ""
    lines = done.stdout.splitlines()
    listed = [line.split()[0] for line in lines if line.startswith("  ")]
    assert listed == ["train", "evaluate", "predict", "export", "data", "models", "pretrained", "ship", "experiments",
                      "bench", "launch"]
    assert all(len(line.split()) > 3 for line in lines if line.startswith("  "))  # each with its one-line help


def test_every_command_is_a_runnable_module():
    for command, (module, _) in cli.COMMANDS.items():
        spec = importlib.util.find_spec(module)
        assert spec is not None, command
        assert 'if __name__ == "__main__":' in Path(spec.origin).read_text(), module


@pytest.mark.parametrize("args, message", [
    (["nope"], "tfcnn: error: unknown command 'nope'; choose one of train, evaluate, predict,"),
    ([], "usage: tfcnn COMMAND"),
])
def test_unknown_or_missing_command_exits_2(args, message):
    done = _run(*TFCNN, *args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(message)
    if args:
        assert len(done.stderr.splitlines()) == 1


def test_the_dispatcher_and_import_tfcnn_load_no_tensorflow():
    assert _heavy_after("import tfcnn, tfcnn.meta, tfcnn.errors, tfcnn.pretrained") == set()
    assert _heavy_after("from tfcnn import cli\ncli.main(['--help'])") == set()
    assert _heavy_after("import tfcnn\ntfcnn.models") == {"keras", "tensorflow"}  # lazy submodules still load


@pytest.mark.parametrize("args", [
    ["predict", "--model", "missing.onnx", "digit.png"],  # a user error: one line, exit 2
    ["predict", "--top-k"],  # a bad flag: argparse's one line, exit 2
    ["pretrained", "list"],
])
def test_commands_behave_as_python_m(args, tmp_path):
    via_script = _run(*TFCNN, *args, cwd=tmp_path)
    via_module = _run(sys.executable, "-m", f"tfcnn.{args[0]}", *args[1:], cwd=tmp_path)
    # The same, except that argparse names the command as typed: "tfcnn predict", not "python -m tfcnn.predict".
    as_typed = via_module.stderr.replace(f"python -m tfcnn.{args[0]}", f"tfcnn {args[0]}")
    assert (via_script.returncode, via_script.stdout, via_script.stderr) == \
           (via_module.returncode, via_module.stdout, as_typed)
    assert via_script.returncode == (0 if args[0] == "pretrained" else 2)
    assert len(via_script.stderr.splitlines()) == (0 if args[0] == "pretrained" else 1)


def test_predict_with_the_shipped_onnx_model(tmp_path):
    model = REPO / "saved_models" / "lenet5-mnist" / "model.onnx"
    data = REPO.parent / "shared" / "data" / "mnist.npz"
    if not (model.is_file() and data.is_file()):
        pytest.skip(f"needs {model.name} of the shipped lenet5-mnist and ../shared/data/mnist.npz")
    with np.load(data) as npz:
        x, y = npz["x_test"][:3], npz["y_test"][:3]
    paths = [tmp_path / f"test_{i}.png" for i in range(3)]
    for path, image in zip(paths, x):
        Image.fromarray(image).save(path)

    done = _run(*TFCNN, "predict", "--model", model, "--json", *paths, cwd=tmp_path)

    assert done.returncode == 0 and done.stderr == "", done.stderr
    results = json.loads(done.stdout)["results"]
    assert [int(r["top_k"][0]["class"]) for r in results] == y.tolist() == [7, 2, 1]


def test_usage_names_the_command_as_typed():
    done = _run(*TFCNN, "predict", "--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: tfcnn predict [-h] --model MODEL")
    done = _run(sys.executable, "-m", "tfcnn.predict", "--help")
    assert done.stdout.startswith("usage: python -m tfcnn.predict")


class _Parser(Exception):
    """Carries the parser a command's main() built, out of it, before any work."""


def _parsers(module_name, monkeypatch):
    import argparse
    import importlib

    def grab(self, *args, **kwargs):
        raise _Parser(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", grab)
    module = importlib.import_module(module_name)
    with pytest.raises(_Parser) as caught:
        module.main([])
    found = [caught.value.args[0]]
    for action in found[0]._actions:
        if isinstance(action, argparse._SubParsersAction):
            found += list(action.choices.values())
    return found


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_flag_says_what_it_does_and_its_default(command, monkeypatch):
    import argparse

    undocumented = []
    for parser in _parsers(cli.COMMANDS[command][0], monkeypatch):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            text = action.help or ""
            name = "/".join(action.option_strings) or action.dest
            if not text.strip():
                undocumented.append(f"{parser.prog} {name}: no help")
            elif action.default not in (None, False, argparse.SUPPRESS) and "default" not in text:
                undocumented.append(f"{parser.prog} {name}: default {action.default!r} not stated")
    assert undocumented == []
