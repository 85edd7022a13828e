"""tfcnn.compat: the private Keras/TensorFlow API tfcnn uses, pinned to the versions it was checked against."""
import ast
import importlib.metadata
from pathlib import Path

import numpy as np
import pytest

from tfcnn import compat

PACKAGE = Path(compat.__file__).resolve().parent
REQUIREMENTS = PACKAGE.parent / "requirements.txt"
PRIVATE_MODULES = ("keras.src", "tensorflow.python", "tensorflow.compiler")
# The private attributes the entries reach; anywhere else in tfcnn they are a workaround outside compat.
PRIVATE_NAMES = {"_symbolic_build", "_tf_trackable", "_initial_epoch", "_trainable_variables",
                 "_model_variables_moving_average", "_writers", "_current_epoch", "_last_batch_seen"}


def _stale(installed, found="you run"):
    changed = {name: version for name, version in installed.items() if version != compat.CHECKED_AGAINST[name]}
    if not changed:
        return None
    checked = " / ".join(f"{name} {version}" for name, version in compat.CHECKED_AGAINST.items())
    running = " / ".join(f"{name} {version}" for name, version in installed.items())
    return (f"compat was checked against {checked}; {found} {running}: re-check each entry in tfcnn/compat.py, "
            "then update CHECKED_AGAINST")


def test_compat_was_checked_against_the_installed_keras_and_tensorflow():
    message = _stale({name: importlib.metadata.version(name) for name in compat.CHECKED_AGAINST})
    assert message is None, message


def test_requirements_pin_the_versions_compat_was_checked_against():
    pins = dict(line.split("==") for line in REQUIREMENTS.read_text().splitlines() if "==" in line)
    message = _stale({name: pins[name] for name in compat.CHECKED_AGAINST}, found="requirements.txt pins")
    assert message is None, message


def test_the_message_names_both_versions_and_what_to_do():
    assert _stale({"keras": "3.99.0", "tensorflow": compat.CHECKED_AGAINST["tensorflow"]}) == (
        f"compat was checked against keras {compat.CHECKED_AGAINST['keras']} / tensorflow "
        f"{compat.CHECKED_AGAINST['tensorflow']}; you run keras 3.99.0 / tensorflow "
        f"{compat.CHECKED_AGAINST['tensorflow']}: re-check each entry in tfcnn/compat.py, then update CHECKED_AGAINST")


def test_no_private_framework_api_outside_compat():
    found = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name == "compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.name}:{node.lineno} imports {n}" for n in names if n.startswith(PRIVATE_MODULES)]
            if isinstance(node, ast.Attribute) and node.attr in PRIVATE_NAMES:
                found.append(f"{path.name}:{node.lineno} uses .{node.attr}")
    assert not found, "private Keras/TensorFlow API outside tfcnn/compat.py (add an entry there): " + "; ".join(found)


def test_the_overridden_hooks_still_exist(tmp_path):
    import keras

    instances = {"keras.callbacks.ModelCheckpoint": keras.callbacks.ModelCheckpoint(str(tmp_path / "w.weights.h5")),
                 "keras.callbacks.BackupAndRestore": keras.callbacks.BackupAndRestore(str(tmp_path / "backup")),
                 "keras.optimizers.Optimizer": keras.optimizers.SGD()}
    assert set(instances) == set(compat.OVERRIDDEN)
    missing = [f"{owner}.{name}" for owner, names in compat.OVERRIDDEN.items() for name in names
               if not hasattr(instances[owner], name)]
    assert not missing, f"Keras no longer has {missing}: re-check the overrides in tfcnn.checkpoints and tfcnn.optim"


def test_each_entry_runs_on_the_installed_versions(tmp_path):
    import keras
    import tensorflow as tf

    assert isinstance(compat.onednn_enabled(), bool)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, name="predictions")(inputs))
    model.compile(optimizer=keras.optimizers.SGD(use_ema=True), loss="mse")
    compat.symbolic_build(model, (tf.TensorSpec((None, 4)), tf.TensorSpec((None, 3))))  # (images, labels)
    assert model.optimizer.built
    assert [(v.path, a.shape) for v, a in compat.ema_pairs(model.optimizer)] == \
           [(v.path, v.shape) for v in model.trainable_variables]
    compat.set_initial_epoch(model, 3)

    archive = keras.export.ExportArchive()
    archive.track_and_add_endpoint("serve", model, compat.input_signature(model))
    compat.drop_duplicate_variables(archive)
    archive.write_out(str(tmp_path / "saved"), verbose=False)

    spec = tf.TensorSpec((None, 4), tf.float32)
    frozen = compat.frozen_function(tf.function(lambda x: model(x)).get_concrete_function(spec))
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(frozen(tf.constant(x))[0].numpy(), model(x).numpy(), rtol=1e-6)
    compat.patch_tf2onnx()

    assert compat.backup_position(keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))) == (0, 0)
    assert compat.tensorboard_writers(keras.callbacks.TensorBoard(str(tmp_path / "logs"))) == []


@pytest.mark.parametrize("name", sorted(PRIVATE_NAMES))
def test_each_private_name_is_used_by_compat(name):
    assert f".{name}" in Path(compat.__file__).read_text()
