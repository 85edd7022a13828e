"""The trained lab models shipped in saved_models/: their manifest, checksums and `pretrained:NAME`.

    python -m tfcnn.models --pretrained                      # what is shipped, with its headline figure
    python -m tfcnn.evaluate --model pretrained:resnet32-cifar10 --dataset cifar10
    python -m tfcnn.pretrained verify                        # every shipped file against its sha256

saved_models/MANIFEST.json lists each shipped model with the sha256 of every file in its folder and
the figures its MODEL_CARD.md claims. `resolve("pretrained:NAME")` checks those checksums before a
model is used, so a changed or truncated file is one clear error, never a silently different model.
$TFCNN_MODELS_DIR names another models folder (one holding MANIFEST.json), e.g. for an installed package.
This module imports no TensorFlow (tfcnn.ship adds a finished run to the shipped models).
"""
import json
import os
import sys
from pathlib import Path, PurePosixPath

from tfcnn.errors import ArgumentParser, TfcnnError, run_cli
from tfcnn.runfiles import sha256

PREFIX = "pretrained:"
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "saved_models"
MANIFEST_FILE = "MANIFEST.json"


def shipped_dir():
    """$TFCNN_MODELS_DIR, else the repository's saved_models/."""
    return Path(os.environ.get("TFCNN_MODELS_DIR") or SHIPPED_DIR)


def manifest():
    """The parsed MANIFEST.json ({"models": {name: entry}}); an empty one if nothing is shipped."""
    path = shipped_dir() / MANIFEST_FILE
    if not path.is_file():
        return {"models": {}}
    try:
        whole = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise TfcnnError(f"{path} is unreadable ({' '.join(str(exc).split())}); restore it with "
                         f"`git checkout -- {path}`") from None
    return _checked(whole, path)


def _checked(whole, path):
    """The parsed manifest if it has the fields this module reads, with the types it reads them as; else a
    TfcnnError naming the first wrong one (a key missing, a number given as text, a file outside the model's
    folder)."""
    def need(ok, where, what):
        if not ok:
            raise TfcnnError(f"{path}: {where} must be {what}; restore it with `git checkout -- {path}`")

    def number(value, kind=(int, float)):
        return isinstance(value, kind) and not isinstance(value, bool)

    def inside(rel):  # a relative path below the model's folder, printable (it goes into one-line messages)
        parts = PurePosixPath(rel).parts
        return rel.isprintable() and parts and not PurePosixPath(rel).is_absolute() and ".." not in parts

    need(isinstance(whole, dict) and isinstance(whole.get("models"), dict), "the top level",
         'a JSON object with a "models" object')
    for name, entry in whole["models"].items():
        where = f"models[{json.dumps(name)}]"
        need(name.isprintable() and name not in ("", ".", "..") and "/" not in name, where, "named by a folder name")
        need(isinstance(entry, dict), where, "an object")
        files = entry.get("files")
        need(isinstance(files, dict) and all(inside(rel) and isinstance(sha, str) for rel, sha in files.items()),
             f"{where}.files", "an object of file paths inside the model's folder and their sha256")
        for key, ok, what in (("arch", isinstance(entry.get("arch"), str), "a name"),
                              ("dataset", isinstance(entry.get("dataset"), str), "a name"),
                              ("params", number(entry.get("params"), int), "an integer")):
            need(ok, f"{where}.{key}", what)
        test = entry.get("test")
        need(isinstance(test, dict) and number(test.get("accuracy")) and number(test.get("f1_macro")),
             f"{where}.test", "an object with the accuracy and f1_macro numbers")
    return whole


def checksums(folder):
    """{relative posix path: sha256} of every file under folder, sorted."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def verify(name):
    """The folder of shipped model `name` after checking every file against the manifest."""
    models = manifest()["models"]
    if name not in models:
        shipped = ", ".join(models) or "none"
        raise TfcnnError(f"no shipped model {name!r}; shipped: {shipped} (looked in {shipped_dir() / MANIFEST_FILE}; "
                         "python -m tfcnn.models --pretrained lists them, TFCNN_MODELS_DIR sets the folder)")
    folder = shipped_dir() / name
    for rel, expected in models[name]["files"].items():
        path = folder / rel
        if not path.is_file():
            raise TfcnnError(f"shipped model {name}: {path} is missing; restore it with `git checkout -- {path}`")
        if sha256(path) != expected:
            raise TfcnnError(f"shipped model {name}: {path} does not match its sha256 in {MANIFEST_FILE} (changed or "
                             f"truncated); restore it with `git checkout -- {path}`")
    return folder


def resolve(spec):
    """`pretrained:NAME` -> the verified folder of a shipped model; any other path is returned as is."""
    spec = str(spec)
    if not spec.startswith(PREFIX):
        return spec
    return str(verify(spec[len(PREFIX):]))


def listing():
    """One line per shipped model: name, architecture, dataset, headline figure."""
    rows = []
    for name, entry in manifest()["models"].items():
        t = entry["test"]
        rows.append(f"{PREFIX}{name:38} {entry['arch']:12} {entry['dataset']:24} test accuracy {t['accuracy']:.4f}, "
                    f"macro F1 {t['f1_macro']:.4f} ({entry['params']:,} parameters)")
    return rows or [f"no shipped models ({shipped_dir() / MANIFEST_FILE} lists none; TFCNN_MODELS_DIR sets the folder)"]


def main(argv=None):
    parser = ArgumentParser(prog="python -m tfcnn.pretrained", description="List and check the shipped trained models.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the shipped models and their headline figures")
    check = sub.add_parser("verify", help="check every shipped file against the manifest's sha256")
    check.add_argument("names", nargs="*", help="models to check (default: all)")
    args = parser.parse_args(argv)
    if args.command == "list":
        print("\n".join(listing()))
    else:
        for name in args.names or list(manifest()["models"]):
            print(f"{name}: ok ({verify(name)})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
