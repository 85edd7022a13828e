"""Evaluation: metrics (scikit-learn), classification report, confusion matrix and learning curves.

    python -m tfcnn.evaluate --model saved_models/NAME --dataset mnist [--out DIR] [--tta flip]
"""
import os
import sys
import weakref
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from tfcnn import data, pipelines, runfiles
from tfcnn.config import TTAS
from tfcnn.errors import ArgumentParser, TfcnnError, run_cli


TTA = TTAS  # the choices of Config.tta
TTA_VIEWS = {"none": 1, "flip": 2, "flip-translate": 6}


def tta_views(images, tta):
    """(weight, view) pairs of NHWC images. flip-translate is airbench's tta_level 2: the image and its mirror
    at 1/4 each, and both, shifted one pixel up-left and one down-right (reflect-padded), at 1/8 each."""
    views = [(1.0, images)]
    if tta in ("flip", "flip-translate"):
        views = [(0.5, images), (0.5, images[:, :, ::-1])]
    if tta == "flip-translate":
        padded = np.pad(images, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="reflect")
        h, w = images.shape[1:3]
        shifted = [padded[:, :h, :w], padded[:, 2:h + 2, 2:w + 2]]
        views = [(0.25, v) for _, v in views] + [(0.125, v) for s in shifted for v in (s, s[:, :, ::-1])]
    return views


_FORWARDS = weakref.WeakKeyDictionary()  # model -> {(compiled GELU, bfloat16 graph pass): its traced forward pass}


def forward(model, images, batch_size=256):
    """The model's outputs for float32 NHWC images, batch by batch through one traced call per model. On 2 cores
    Keras' model.predict took about twice as long for the same batches (docs/results/speedrun.md)."""
    # Here, not at the top: importing tfcnn.evaluate (the metrics, --help) needs no TensorFlow.
    import tensorflow as tf

    from tfcnn import kernels

    calls = _FORWARDS.setdefault(model, {})
    # Both are fixed when a call is traced: the GELU kernels, and whether TF's oneDNN pass rewrites it to bfloat16.
    key = (kernels.compiled_inference_on(),
           bool(tf.config.optimizer.get_experimental_options().get("auto_mixed_precision_onednn_bfloat16")))
    if key not in calls:
        owner = weakref.ref(model)  # a strong reference in the value would keep the key, and the model, alive
        calls[key] = tf.function(lambda batch: owner()(batch, training=False), reduce_retracing=True)
    call = calls[key]
    return np.concatenate([np.asarray(call(tf.constant(images[i:i + batch_size])))
                           for i in range(0, len(images), batch_size)])


def predict_proba(model, images, batch_size=256, tta="none"):
    """Class probabilities for uint8/float images on the raw 0-255 scale (models normalise inside).
    tta "flip": the mean of the probabilities of each image and its mirror image (NHWC, left-right), the
    test-time counterpart of the flips colour images train with. tta "flip-translate": airbench's 6 views
    (tta_views), whose logits it weighs and sums; the softmax of that sum is the softmax of the views'
    weighted log-probabilities, which is what is computed here from the model's probabilities."""
    if tta not in TTA:
        raise TfcnnError(f"unknown test-time augmentation {tta!r}; choose one of {', '.join(TTA)}")
    images = np.asarray(images, dtype="float32")
    if tta != "flip-translate":
        probs = forward(model, images, batch_size)
        if tta == "flip":
            probs = (probs + forward(model, np.ascontiguousarray(images[:, :, ::-1]), batch_size)) / 2
        return probs
    log_probs = sum(weight * np.log(np.maximum(forward(model, np.ascontiguousarray(view), batch_size)
                                               .astype("float64"), 1e-300))
                    for weight, view in tta_views(images, tta))
    log_probs -= log_probs.max(axis=1, keepdims=True)
    probs = np.exp(log_probs)
    return (probs / probs.sum(axis=1, keepdims=True)).astype("float32")


def compute_metrics(y_true, probs, class_names):
    """Accuracy, cross-entropy and macro precision/recall/F1, plus the per-class report."""
    from sklearn.metrics import classification_report, log_loss, precision_recall_fscore_support

    y_true = np.asarray(y_true)
    y_pred = probs.argmax(axis=1)
    probs = probs.astype("float64")
    probs = np.clip(probs, 1e-7, 1.0) / np.clip(probs, 1e-7, 1.0).sum(axis=1, keepdims=True)  # float32 rounding
    labels = list(range(len(class_names)))
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0)
    report = classification_report(y_true, y_pred, labels=labels, target_names=list(class_names),
                                   digits=4, zero_division=0)
    per_class = classification_report(y_true, y_pred, labels=labels, target_names=list(class_names),
                                      zero_division=0, output_dict=True)
    metrics = {
        "accuracy": float((y_pred == y_true).mean()),
        "loss": float(log_loss(y_true, probs, labels=labels)),
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "f1_macro": float(f1),
        "num_examples": int(len(y_true)),
        "per_class": {name: {k: float(per_class[name][k]) for k in ("precision", "recall", "f1-score", "support")}
                      for name in class_names},
    }
    return metrics, report


def plot_confusion_matrix(y_true, y_pred, class_names, path, title="Confusion matrix (test)"):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(5, 0.45 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=list(range(len(class_names))), display_labels=list(class_names),
        ax=ax, colorbar=False, xticks_rotation=45, values_format="d",
        include_values=len(class_names) <= 20)
    ax.set_title(title)
    fig.tight_layout()
    with runfiles.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def history(run_dir):
    """The epochs of a run (train stage, then fine-tune), as one DataFrame with a 1-based `epoch`."""
    import pandas as pd

    frames = [pd.read_csv(p) for p in (Path(run_dir) / "history.csv", Path(run_dir) / "history_fine_tune.csv")
              if p.exists() and p.stat().st_size]
    if not frames:
        return pd.DataFrame(columns=["epoch", "accuracy", "loss", "val_accuracy", "val_loss"])
    hist = pd.concat(frames, ignore_index=True)
    hist["epoch"] = np.arange(1, len(hist) + 1)
    return hist


def plot_curves(history_csv, path):
    """Loss and accuracy, train vs validation, from a Keras CSVLogger file."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    hist = pd.read_csv(history_csv)
    epochs = hist["epoch"] + 1
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in zip(axes, ("loss", "accuracy")):
        if key in hist:
            ax.plot(epochs, hist[key], label=f"train {key}")
        if f"val_{key}" in hist:
            ax.plot(epochs, hist[f"val_{key}"], label=f"validation {key}")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with runfiles.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def labelled(class_names, class_ids=None):
    """Names for reports and figures: 'apple (0)' when the classes are a subset with their own ids."""
    if class_ids is None or list(class_ids) == list(range(len(class_names))):
        return list(class_names)
    return [f"{name} ({i})" for name, i in zip(class_names, class_ids)]


def test_report(model, images, labels, class_names, extra=None, batch_size=256, class_ids=None, tta="none"):
    """Evaluate `model`: (metrics = {**extra, "test": ...}, classification report text, predicted labels).

    class_ids: the classes' ids in the full dataset (a subset such as cifar100:0,55,58), kept in the
    metrics and shown beside the names in the report.
    """
    probs = predict_proba(model, images, batch_size, tta=tta)
    metrics, _ = compute_metrics(labels, probs, class_names)
    _, report = compute_metrics(labels, probs, labelled(class_names, class_ids))
    if class_ids is not None:
        metrics["class_ids"] = [int(i) for i in class_ids]
        for name, i in zip(class_names, class_ids):
            metrics["per_class"][name]["id"] = int(i)
    return {**(extra or {}), "test": metrics}, report, probs.argmax(axis=1)


def write_report_files(out_dir, report, labels, predicted, class_names, class_ids=None):
    """classification_report.txt and confusion_matrix.png, each written atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runfiles.write_text(out_dir / "classification_report.txt", report)
    plot_confusion_matrix(labels, predicted, labelled(class_names, class_ids), out_dir / "confusion_matrix.png")


def write_report(model, images, labels, class_names, out_dir, extra=None, batch_size=256, class_ids=None,
                 tta="none"):
    """Evaluate `model` and write classification_report.txt, confusion_matrix.png and, last, metrics.json
    (each atomically). Returns (metrics, report text)."""
    metrics, report, predicted = test_report(model, images, labels, class_names, extra, batch_size, class_ids,
                                             tta=tta)
    write_report_files(out_dir, report, labels, predicted, class_names, class_ids)
    runfiles.write_json(Path(out_dir) / "metrics.json", metrics)
    return metrics, report


def main(argv=None):
    parser = ArgumentParser(prog="python -m tfcnn.evaluate", description="Evaluate a saved model on a test set.")
    parser.add_argument("--model", required=True, help=".keras file, saved_models/<name> folder or pretrained:NAME")
    parser.add_argument("--dataset", required=True, help="test data: a dataset name as in training, e.g. mnist, cifar100:0,55,58")
    parser.add_argument("--data-dir", default=None, help="dataset folder (default $TFCNN_DATA_DIR, else ./data)")
    parser.add_argument("--classes", default=None, help="comma-separated class subset, as in training")
    parser.add_argument("--limit-test", type=int, default=None, help="evaluate only the first N test images (default: all)")
    parser.add_argument("--out", default=None, help="output folder (default: runs/eval-<model>-<dataset>)")
    parser.add_argument("--tta", default="none", choices=TTA,
                        help="test-time augmentation: flip averages each image's and its mirror image's "
                             "probabilities (colour images, which train with flips); flip-translate is airbench's "
                             "6 views (the mirror and 1-pixel shifts, logits weighted 1/4, 1/4, 1/8 x 4); "
                             "default none, a single view")
    args = parser.parse_args(argv)

    from tfcnn import models  # imports Keras and TensorFlow: after the flags, so that --help is instant

    model = models.load_model(args.model)
    classes = args.classes.split(",") if args.classes else None
    ds = data.load(args.dataset, args.data_dir, classes=classes)
    # The same (stratified) test subset the trainer evaluates with --limit-test.
    pipes = pipelines.make_pipelines(ds, batch_size=256, val_fraction=0, augment=False, limit_test=args.limit_test)
    x, y = pipes.x_test, pipes.y_test
    n_out = model.output_shape[-1]
    if n_out != ds.num_classes:
        raise TfcnnError(f"the model predicts {n_out} classes but {args.dataset} has {ds.num_classes}; "
                         "evaluate on the dataset (and --classes) it was trained on")
    if tuple(model.input_shape[1:]) != tuple(ds.image_shape):
        raise TfcnnError(f"the model takes {model.input_shape[1:]} images but {args.dataset} has {ds.image_shape}")
    if args.tta != "none" and ds.image_shape[-1] != 3:
        raise TfcnnError(f"--tta {args.tta} is for colour images, which train with flips; {args.dataset}'s digits or letters "
                         "train with shifts only, and a mirrored one is another glyph: drop --tta")
    out = Path(args.out or f"runs/eval-{Path(args.model).stem}-{args.dataset.replace(':', '_').replace('/', '_')}")
    metrics, report = write_report(model, x, y, ds.class_names, out,
                                   extra={"model": str(args.model), "dataset": args.dataset, "tta": args.tta},
                                   class_ids=ds.class_ids, tta=args.tta)
    print(report)
    t = metrics["test"]
    views = f" ({args.tta} TTA: {TTA_VIEWS[args.tta]} views)" if args.tta != "none" else ""
    print(f"test accuracy {t['accuracy']:.4f}  macro F1 {t['f1_macro']:.4f}  ({t['num_examples']} images){views} "
          f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
