"""Ship a finished run: copy its model into saved_models/ with ONNX, a model card and checksums in the manifest.

    python -m tfcnn.ship --run runs/NAME --as resnet32-cifar10 --command "python -m tfcnn.train ..."

The model is re-exported without its optimizer state, checked (ONNX against Keras, the test accuracy against
the run's metrics.json) and recorded in saved_models/MANIFEST.json, where tfcnn.pretrained verifies it
before every use.
"""
import json
import math
import shutil
import sys
import time
from pathlib import Path

from tfcnn import data, evaluate, export, hardware, meta as meta_lib, pretrained, runfiles
from tfcnn.errors import ArgumentParser, TfcnnError, run_cli

# Test images each card's accuracy is re-measured on (evenly spaced over the test set: export.check_indices).
SUBSET_IMAGES = 1000
# Where each dataset comes from and under what terms, for the cards.
DATA_SOURCES = {
    "mnist": "MNIST (LeCun, Cortes & Burges), 60,000 train / 10,000 test handwritten digits; "
             "licence: CC BY-SA 3.0 (as distributed by Yann LeCun and Corinna Cortes).",
    "notmnist": "notMNIST (Yaroslav Bulatov, 2011), letters A-J rendered from public fonts; a per-letter-balanced "
                "subset of notMNIST_large for training and notMNIST_small for test; no formal licence was given "
                "by its author (public release with a blog post).",
    "cifar10": "CIFAR-10 (Krizhevsky, 2009, University of Toronto), original pixels; no formal licence, released "
               "for research with a request to cite the technical report 'Learning Multiple Layers of Features "
               "from Tiny Images'.",
    "cifar100": "CIFAR-100 (Krizhevsky, 2009, University of Toronto), original pixels; no formal licence, released "
                "for research with a request to cite 'Learning Multiple Layers of Features from Tiny Images'.",
}
DATA_SOURCES["cifar10_reptiles"] = (DATA_SOURCES["cifar10"] + " Plus the 5 reptile classes of CIFAR-100 "
                                    "(crocodile, dinosaur, lizard, snake, turtle) as labels 10-14.")


def cpu_description():
    """'AMD EPYC (native bfloat16, 2 cores)': the CPU model, whether it computes bfloat16 natively, its cores."""
    cpu = hardware.cpu_info()
    return f"{cpu['model']} ({'native' if cpu['native_bf16'] else 'no native'} bfloat16, {cpu['cores']} cores)"


def _card(name, entry, config, metrics):
    t = entry["test"]
    per_class = sorted(metrics["test"]["per_class"].items(), key=lambda kv: kv[1]["f1-score"])
    weakest = ", ".join(f"{c} (F1 {v['f1-score']:.3f})" for c, v in per_class[:3])
    rows = "\n".join(f"| {c} | {v['precision']:.4f} | {v['recall']:.4f} | {v['f1-score']:.4f} | {int(v['support'])} |"
                     for c, v in metrics["test"]["per_class"].items())
    sub = entry["subset"]
    if config.get("checkpoint", "best") == "last":
        held_out = (f"minus a seeded, stratified {config['val_fraction']:.0%} validation split (seed {config['seed']}); "
                    if config["val_fraction"] else "(all of it, no validation split); ")
        split = (f"Training used the train split {held_out}the checkpoint is the last epoch's weights (epoch "
                 f"{metrics['epochs']}), chosen before training; the test split was used once, at the end.")
    else:
        split = (f"Training used the train split minus a seeded, stratified {config['val_fraction']:.0%} validation "
                 f"split\n(seed {config['seed']}), which chose the checkpoint (best validation accuracy, epoch "
                 f"{metrics['best_epoch']} of\n{metrics['epochs']}); the test split was used once, at the end.")
    best_val = metrics.get("best_val_accuracy")
    best_val = f"{best_val:.4f}" if best_val is not None and math.isfinite(best_val) else "- (no validation split)"
    tta = metrics["test"].get("tta")
    tta = (f"- with test-time augmentation (`--tta {tta['kind']}`, {tta['views']} views, {tta['precision']}): test accuracy "
           f"**{tta['accuracy']:.4f}**; {metrics['time_to_tta_s'] / 60:.1f} min from the start of training to it\n"
           if tta else "")
    if "onnx" in entry.get("left_out", []):
        files = ("SavedModel (`saved_model.pb`, `variables/`), `model.keras`, `tfcnn.json` (class names, input shape,\n"
                 "preprocessing), this card. `model.onnx` is left out to keep the shipped models within their size "
                 "budget;\nregenerate it (with its parity check) by `python -m tfcnn.export --model "
                 f"pretrained:{name} --format onnx --out model.onnx` (any path outside this folder).")
    else:
        files = ("SavedModel (`saved_model.pb`, `variables/`), `model.keras`, `model.onnx` (+ `model.onnx.json`: parity\n"
                 "check against Keras), `tfcnn.json` (class names, input shape, preprocessing), this card.")
    return f"""# {name}

{entry['arch']} ({entry['params']:,} parameters) trained on `{entry['dataset']}`{' classes ' + ', '.join(map(str, config.get('classes') or [])) if config.get('classes') else ''}.
Load it with `--init-from pretrained:{name}` (tfcnn.train), or `--model pretrained:{name}` (tfcnn.evaluate,
tfcnn.export, tfcnn.predict); the files are checked against saved_models/{pretrained.MANIFEST_FILE} first.

## Data and split
{DATA_SOURCES.get(entry['dataset'].split(':')[0], entry['dataset'])}
{split}

## Recipe
```
{entry['command']}
```
Full settings: `config.json` of the run, copied here as `run_config.json`.

## Results (test split, float32 inference)
- test accuracy **{t['accuracy']:.4f}**, macro F1 **{t['f1_macro']:.4f}** on {t['num_examples']:,} test images
- best validation accuracy {best_val}
- subset re-measured by the tests (tests/test_pretrained.py): {sub['images']} test images evenly spaced
  (`tfcnn.export.check_indices({t['num_examples']}, {sub['images']})`): {sub['correct']} correct, accuracy {sub['accuracy']:.4f}
- training: {metrics['train_time_s'] / 60:.1f} min ({metrics['epochs']} epochs, {metrics['train_images_per_s']} images/s,
  {metrics['precision_policy']}) on {entry['trained_on']}
{tta}
| class | precision | recall | F1 | test images |
|---|---:|---:|---:|---:|
{rows}

## Known weaknesses
- Weakest classes: {weakest}.
- Inputs must look like the training data: {entry['input_shape'][0]}x{entry['input_shape'][1]} images, raw 0-255 pixels
  (normalisation is inside the model); other sizes are resized by tfcnn.predict and lose accuracy.
- Trained on one small benchmark: not robust to distribution shift, adversarial inputs, or classes it never saw
  (it always answers one of its {len(metrics['test']['per_class'])} classes).

## Files
{files}
"""


def ship(run_dir, as_name, command, *, data_dir=None, subset_images=SUBSET_IMAGES, saved_models_dir="saved_models",
         leave_out=()):
    """Copy a finished run's exported model to saved_models/<as_name>/, add model.onnx (unless `leave_out` names
    "onnx") and a card, and record it (checksums, figures) in the manifest. Returns the manifest entry."""
    if set(leave_out) - {"onnx"}:
        raise TfcnnError(f"only onnx can be left out of a shipped model (tfcnn.export regenerates it), not "
                         f"{', '.join(sorted(set(leave_out) - {'onnx'}))}")
    from tfcnn import models  # imports Keras and TensorFlow: after the flags, so that --help is instant

    run_dir = Path(run_dir)
    metrics_file, config_file = run_dir / "metrics.json", run_dir / "config.json"
    if not metrics_file.is_file():
        raise TfcnnError(f"{run_dir} has no metrics.json: only a finished run can be shipped")
    metrics, config = json.loads(metrics_file.read_text()), json.loads(config_file.read_text())
    source = Path(config["saved_models_dir"]) / config["name"]
    if not (source / "saved_model.pb").is_file():
        raise TfcnnError(f"{source} holds no exported SavedModel of run {run_dir}")
    target = pretrained.shipped_dir() / as_name
    # Re-exported from the uncompiled model: the weights without the optimizer's state (half the size).
    model, meta = models.load_model(source), meta_lib.read_meta(source)
    runfiles.remove_temporaries_of(target)  # what a killed ship of the same name left
    with runfiles.atomic_dir(target) as tmp:  # the folder appears whole, once its card and checksums are in
        export.export_saved_model(model, tmp, meta)
        shutil.copy2(config_file, tmp / "run_config.json")
        ds = data.load(config["dataset"], data_dir, classes=config.get("classes"))
        images = ds.x_test[export.check_indices(len(ds.x_test), export.CHECK_IMAGES)]
        if "onnx" not in leave_out:
            export.export(model, "onnx", tmp / "model.onnx", images=images,
                          meta={k: v for k, v in meta.items() if k != "check"},
                          images_from=f"{ds.name} test set, {len(images)} of {len(ds.x_test)} images evenly spaced")
        # The accuracy the card claims on a fixed subset, re-measured exactly by tests/test_pretrained.py.
        subset_images = min(subset_images, len(ds.x_test))
        subset = export.check_indices(len(ds.x_test), subset_images)
        full = evaluate.predict_proba(model, ds.x_test).argmax(1)
        if abs(float((full == ds.y_test).mean()) - metrics["test"]["accuracy"]) > 1e-9:
            raise TfcnnError(f"{source} gives test accuracy {(full == ds.y_test).mean():.4f}, its run recorded "
                             f"{metrics['test']['accuracy']:.4f}: not the run's model")
        correct = int((full[subset] == ds.y_test[subset]).sum())
        t = metrics["test"]
        entry = {
            "arch": metrics["arch"], "dataset": config["dataset"], "classes": config.get("classes"),
            "class_names": meta["class_names"], "input_shape": meta["input_shape"], "params": metrics["params"],
            "command": command, "run": run_dir.name, "trained_on": cpu_description(),
            "shipped": time.strftime("%Y-%m-%d"),
            "test": {k: t[k] for k in ("accuracy", "f1_macro", "num_examples")} |
                    {"per_class_f1": {c: round(v["f1-score"], 4) for c, v in t["per_class"].items()}},
            "subset": {"images": len(subset), "correct": correct, "accuracy": correct / len(subset),
                       "indices": f"tfcnn.export.check_indices({len(ds.x_test)}, {subset_images})"},
            "train_time_s": metrics["train_time_s"], "epochs": metrics["epochs"],
        }
        if "tta" in t:
            entry["test"]["tta"] = {k: t["tta"][k] for k in ("kind", "views", "accuracy")}
            entry["time_to_tta_s"] = metrics["time_to_tta_s"]
        if leave_out:
            entry["left_out"] = sorted(leave_out)
        (tmp / "MODEL_CARD.md").write_text(_card(as_name, entry, config, metrics))
        entry["files"] = pretrained.checksums(tmp)
    whole = pretrained.manifest()
    whole.setdefault("models", {})[as_name] = entry
    runfiles.write_text(pretrained.shipped_dir() / pretrained.MANIFEST_FILE, json.dumps(whole, indent=1) + "\n")
    return entry


def main(argv=None):
    parser = ArgumentParser(prog="python -m tfcnn.ship",
                            description="Copy a finished run's model into saved_models/ with a card and checksums.")
    parser.add_argument("--run", required=True, help="the finished run folder, runs/<name>")
    parser.add_argument("--as", dest="as_name", required=True, help="the shipped name, e.g. resnet32-cifar10")
    parser.add_argument("--command", required=True, help="the exact command that trained it (goes into the card)")
    parser.add_argument("--data-dir", default=None, help="dataset folder (default $TFCNN_DATA_DIR, else ./data)")
    parser.add_argument("--leave-out", action="append", default=[], choices=["onnx"],
                        help="a format not to ship (the card says how to regenerate it), to keep the shipped models "
                             "within their size budget; default: ship every format")
    args = parser.parse_args(argv)
    entry = ship(args.run, args.as_name, args.command, data_dir=args.data_dir, leave_out=args.leave_out)
    folder = pretrained.shipped_dir() / args.as_name
    print(f"shipped {args.as_name}: test accuracy {entry['test']['accuracy']:.4f}, "
          f"{sum((folder / f).stat().st_size for f in entry['files']) / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
