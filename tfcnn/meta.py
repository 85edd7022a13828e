"""Model metadata: the tfcnn.json an export carries (class names, input shape, mean/std, preprocessing).

Standard library only, so reading it costs no TensorFlow start-up: `tfcnn.predict` on an ONNX or
TFLite file, the web demo's server and `tfcnn.export` all read the same files through here.
Where it lives: X.json beside a file artefact X (model.onnx.json), tfcnn.json in a saved model's
folder and a copy in its assets/ (so the SavedModel alone carries it); an ONNX file also embeds it
under the metadata key "tfcnn". A model whose metadata disagrees with its graph is refused (check_graph).
"""
import json
from pathlib import Path

from tfcnn.errors import TfcnnError

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
            try:
                text = candidate.read_bytes()
            except OSError as exc:
                raise TfcnnError(f"{candidate}: cannot read the model metadata ({exc.strerror})") from None
            return parse(text, candidate)
    return None


def parse(text, source):
    """The metadata in `text` (JSON, str or bytes), read from `source`: a JSON object whose class_names,
    input_shape and dataset, where present, have the types their readers expect; else a TfcnnError."""
    try:
        meta = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise TfcnnError(f"{source}: not valid JSON ({' '.join(str(exc).split())}); re-export the model "
                         "(python -m tfcnn.export) or delete the file") from None
    names, shape, dataset = (meta.get(k) for k in ("class_names", "input_shape", "dataset")) \
        if isinstance(meta, dict) else (None, None, None)
    for ok, what, value in (
            (isinstance(meta, dict), "hold a JSON object of model metadata", meta),
            (names is None or isinstance(names, list) and all(isinstance(n, str) for n in names),
             "give class_names as a list of strings", names),
            (shape is None or isinstance(shape, list) and len(shape) == 3
             and all(type(d) is int and d > 0 for d in shape), "give input_shape as [height, width, channels]", shape),
            (dataset is None or isinstance(dataset, str), "give dataset as a name", dataset)):
        if not ok:
            got = json.dumps(value)
            raise TfcnnError(f"{source}: model metadata must {what}, got {got[:60] + '...' if len(got) > 60 else got}; "
                             "re-export the model (python -m tfcnn.export) or delete the file")
    return meta


def class_names(meta, num_classes):
    """The model's class names if its metadata has one per output, else "0", "1", ..."""
    names = (meta or {}).get("class_names")
    return list(names) if names and len(names) == num_classes else [str(i) for i in range(num_classes)]


def check_graph(meta, input_shape, num_classes, where):
    """Refuse, with one TfcnnError line, a model whose metadata disagrees with its graph: a class name per output
    and the input shape (dimensions the graph leaves open are not compared). Metadata that names neither passes."""
    if not meta:
        return
    fix = f"the metadata ({META_FILE} or X.json) is not this model's: re-export the model with python -m tfcnn.export"
    if not isinstance(meta, dict):
        raise TfcnnError(f"{where}: its metadata is not a JSON object; {fix}")
    names, shape = meta.get("class_names"), meta.get("input_shape")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise TfcnnError(f"{where}: its metadata's class_names is not a list of names; {fix}")
        if _known(num_classes) and len(names) != int(num_classes):
            raise TfcnnError(f"{where}: its metadata names {len(names)} classes but the model outputs {int(num_classes)}; "
                             f"{fix}")
    if shape is not None:
        graph = [int(d) if _known(d) else None for d in input_shape]
        if (not isinstance(shape, list) or not all(_known(d) for d in shape) or len(shape) != len(graph)
                or any(g is not None and g != d for d, g in zip(shape, graph))):
            raise TfcnnError(f"{where}: its metadata says it takes {shape!r} images but the model takes "
                             f"{[g if g is not None else 'any' for g in graph]}; {fix}")


def _known(dim):
    """A fixed dimension: an int (numpy's too), not None, a symbolic name or -1."""
    return not isinstance(dim, bool) and hasattr(dim, "__index__") and int(dim) >= 0
