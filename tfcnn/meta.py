"""Model metadata: the tfcnn.json an export carries (class names, input shape, mean/std, preprocessing).

Standard library only, so reading it costs no TensorFlow start-up: `tfcnn.predict` on an ONNX or
TFLite file, the web demo's server and `tfcnn.export` all read the same files through here.
Where it lives: X.json beside a file artefact X (model.onnx.json), tfcnn.json in a saved model's
folder and a copy in its assets/ (so the SavedModel alone carries it); an ONNX file also embeds it
under the metadata key "tfcnn".
"""
import json
from pathlib import Path

META_FILE = "tfcnn.json"


def read_meta(path):
    """The metadata of a saved model: X.json beside a file X, else the tfcnn.json next to (or in the
    assets of) a saved model; None if there is none."""
    path = Path(path)
    base = path if path.is_dir() else path.parent
    candidates = [base / META_FILE, base / "assets" / META_FILE]
    if not path.is_dir():
        candidates.insert(0, path.with_name(path.name + ".json"))
    for candidate in candidates:
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return None


def class_names(meta, num_classes):
    """The model's class names if its metadata has one per output, else "0", "1", ..."""
    names = (meta or {}).get("class_names")
    return list(names) if names and len(names) == num_classes else [str(i) for i in range(num_classes)]
