"""Export: SavedModel (+ the .keras file and tfcnn.json metadata) under saved_models/<name>/.

Writes are atomic: everything goes to a temporary sibling folder that is renamed into place
only when complete, so an interrupted export never leaves a half-written model under the name.
"""
import json
import os
import shutil
import tempfile
from pathlib import Path

META_FILE = "tfcnn.json"


def _atomic_dir(target):
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))


def _replace_dir(tmp, target):
    target = Path(target)
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / "x")
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def export_saved_model(model, target, meta):
    """Write target/ = SavedModel (serving signature: raw 0-255 pixels -> class probabilities),
    target/model.keras and target/tfcnn.json (class names, input shape, preprocessing), and a copy
    of the metadata in target/assets/ so the SavedModel alone carries it."""
    tmp = _atomic_dir(target)
    try:
        model.export(str(tmp), format="tf_saved_model", verbose=False)
        model.save(tmp / "model.keras")
        text = json.dumps(meta, indent=2) + "\n"
        (tmp / META_FILE).write_text(text)
        (tmp / "assets").mkdir(exist_ok=True)
        (tmp / "assets" / META_FILE).write_text(text)
        _replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Path(target)


def read_meta(path):
    """The tfcnn.json next to (or inside the assets of) a saved model, or None."""
    path = Path(path)
    base = path if path.is_dir() else path.parent
    for candidate in (base / META_FILE, base / "assets" / META_FILE):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return None
