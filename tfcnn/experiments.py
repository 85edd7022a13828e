"""Experiment grids: run a set of configurations, one run folder each, and compare them in one table.

    python -m tfcnn.experiments lenet-variants --out docs/experiments     # the MNIST lab's ten variants
    python -m tfcnn.experiments notmnist-models --epochs 3 --set width=1000
    python -m tfcnn.experiments my_grid.yaml --quick                      # 1 epoch on 256 images
    python -m tfcnn.experiments --list

A grid is a base config plus a list of variants (dicts of Config fields); a YAML/JSON grid file has
the keys of a GRIDS entry (base, variants, optional description and quick). Precedence, lowest first:
per-arch defaults < base < variant < the grid's quick settings (--quick) < --epochs/--limit-train/--set.
An override may not set a field the grid varies (that would make the variants equal).

Each run lands in <runs_dir>/<grid>/<label> (<grid>-quick/ with --quick). A finished run (its
metrics.json) is read back instead of retrained, and an unfinished one resumes from its last epoch
(tfcnn.train), so an interrupted grid continues where it stopped. The table <out>/<grid>.csv and .md
(default out: <runs_dir>/<grid>) and the figure <out>/<grid>.png compare the runs.
"""
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from tfcnn import evaluate, runfiles
from tfcnn.config import REUSE_FREE
from tfcnn.errors import ArgumentParser, TfcnnError, run_cli

_LENET_LAB = dict(arch="lenet5", dataset="mnist", schedule="constant", batch_size=128, augment=False)

# Each grid: description, base (Config fields shared by every run), variants (what differs),
# quick (extra settings for --quick, on top of QUICK).
# The ResNet lab's transfer to CIFAR-10 + reptiles: what its grids share.
_REPTILES = dict(arch="resnet", stack_n=5, dataset="cifar10_reptiles", init_from="pretrained:resnet32-cifar10",
                 optimizer="sgd", momentum=0.9, nesterov=True, batch_size=128, schedule="cosine", label_smoothing=0.1)
_REPTILE_SETUPS = [
    dict(freeze="stem_*,stage1_*,stage2_*", lr=0.05, label="last-stage"),
    # Without the warmup, lr 0.01 diverged (NaN in epoch 1, batch 26): the new head's random
    # gradients reach a body whose frozen BatchNorm no longer renormalises.
    dict(freeze="*_bn", lr=0.01, warmup_epochs=1, label="full-bn-frozen"),
    dict(init_from=None, freeze="none", lr=0.1, warmup_epochs=1, label="scratch"),
]
_REPTILE_NAMES = ["crocodile", "dinosaur", "lizard", "snake", "turtle"]

GRIDS = {
    "lenet-variants": dict(
        description="The MNIST lab's ten LeNet-5 variants (optimizer x activation x learning rate): classic "
                    "LeNet-5 (average pooling, 120-84 dense), constant learning rate, no augmentation. SGD is "
                    "plain SGD (momentum 0), as the lab's Keras `SGD(lr)` default.",
        base=dict(_LENET_LAB, epochs=5, momentum=0.0, nesterov=False),
        variants=[dict(optimizer=o, activation=a, lr=lr) for o, a, lr in [
            ("adam", "tanh", 0.01), ("adam", "tanh", 0.001), ("adam", "relu", 0.01), ("adam", "relu", 0.001),
            ("sgd", "tanh", 0.01), ("sgd", "tanh", 0.001), ("sgd", "relu", 0.01), ("sgd", "relu", 0.001),
            ("sgd", "tanh", 0.0001), ("adam", "tanh", 0.0001)]],
    ),
    "lenet-study": dict(
        description="The MNIST lab's task 3, one factor at a time around a baseline (classic LeNet-5: 2 conv "
                    "layers, tanh, average pooling, Adam 1e-3): number of conv layers (1/2/3), activation "
                    "(tanh/relu/elu), learning rate (1e-2/1e-3/1e-4) and pooling (avg/max).",
        base=dict(_LENET_LAB, epochs=3, optimizer="adam", lr=0.001, activation="tanh", pool="avg", conv_layers=2),
        variants=[dict(label="baseline"), dict(conv_layers=1, label="1-conv"), dict(conv_layers=3, label="3-conv"),
                  dict(activation="relu", label="relu"), dict(activation="elu", label="elu"),
                  dict(lr=0.01, label="lr0.01"), dict(lr=0.0001, label="lr0.0001"), dict(pool="max", label="max-pool")],
    ),
    "notmnist-models": dict(
        description="The notMNIST lab's tasks 1-3: two 3x3 convs + Dense 5000 (two_conv), one conv + 2x2 max "
                    "pooling + Dense 5000 (pooled), classic LeNet-5; Adam, constant learning rate, no augmentation.",
        base=dict(dataset="notmnist", optimizer="adam", schedule="constant", batch_size=128, epochs=3,
                  augment=False),
        variants=[dict(arch="two_conv", lr=1e-4, label="two_conv"), dict(arch="pooled", lr=1e-4, label="pooled"),
                  dict(arch="lenet5", lr=1e-3, label="lenet5")],
        quick=dict(width=64),  # two_conv at width 5000 has 125M parameters (~0.5 GB per saved copy)
    ),
    "mobilenet-sam": dict(
        description="The MobileNetV2 homework: MobileNetV2 (alpha 0.5) with SAM (rho 0.05) and label smoothing "
                    "0.1 vs plain SGD (Nesterov momentum 0.9, no smoothing), cosine schedule, on 3 CIFAR-10 classes "
                    "(the lecture's subset, as notebook 04).",
        base=dict(arch="mobilenet_v2", alpha=0.5, dataset="cifar10", classes=["airplane", "automobile", "bird"],
                  epochs=3, lr=0.05, batch_size=128, schedule="cosine", limit_train=3000),
        variants=[dict(optimizer="sam", label_smoothing=0.1, label="sam-smooth0.1"),
                  dict(optimizer="sgd", label_smoothing=0.0, label="sgd")],
        quick=dict(limit_train=128, limit_test=150),  # tracing the 153-layer graph dominates a quick run
    ),
    "mobilenet-transfer": dict(
        description="The MobileNetV2 homework on its CIFAR-100 classes 5, 21, 35 (bed, chimpanzee, girl): MobileNetV2 x0.5 "
                    "pretrained on lossless CIFAR-10 (configs/mobilenetv2_x0.5_cifar10.yaml, shipped as "
                    "`pretrained:mobilenetv2-x0.5-cifar10`; the homework's backbone was CIFAR-100-pretrained, which this "
                    "data cannot give) with a new 3-way head, trained with the homework's recipe: SGD momentum 0.9 at "
                    "lr 0.1, StepLR x0.5 every 20 epochs, 60 epochs. sam-ls: SAM (rho 0.05) + label smoothing 0.1 (the "
                    "homework); sgd: plain SGD, no smoothing; sam: SAM without smoothing. head: only the last 2 parameter "
                    "tensors (the Dense head's kernel and bias) train, as in the homework. full: every layer trains, at "
                    "lr 0.01 (the head's 0.1 would wreck the pretrained features). scratch: the same 60 epochs from "
                    "random weights with the homework's optimizer. Each setup runs with seeds 1, 2, 3 (the seed also "
                    "draws the 10 % validation split that picks the checkpoint).",
        base=dict(arch="mobilenet_v2", alpha=0.5, dataset="cifar100", classes=["5", "21", "35"],
                  init_from="pretrained:mobilenetv2-x0.5-cifar10", optimizer="sam", sam_rho=0.05, lr=0.1,
                  momentum=0.9, nesterov=False, batch_size=128, epochs=60, schedule="step", milestones=[20, 40],
                  gamma=0.5, label_smoothing=0.1, weight_decay=5e-4, warmup_epochs=0),
        variants=[dict(freeze="all", label="sam-ls-head"),
                  dict(freeze="all", optimizer="sgd", label_smoothing=0.0, label="sgd-head"),
                  dict(freeze="all", label_smoothing=0.0, label="sam-head"),
                  dict(freeze="none", lr=0.01, label="sam-ls-full"),
                  dict(freeze="none", lr=0.01, optimizer="sgd", label_smoothing=0.0, label="sgd-full"),
                  dict(freeze="none", lr=0.01, label_smoothing=0.0, label="sam-full"),
                  dict(init_from=None, freeze="none", label="scratch-sam-ls")],
        seeds=[1, 2, 3],
        quick=dict(limit_train=128, limit_test=150),
    ),
    "cifar-cnn-lecture": dict(
        description="The lecture's small CNN (cifar_cnn, 21,699 parameters) on its 3 CIFAR-100 classes 0, 55, 58 "
                    "(apple, otter, pickup_truck): the lecture's settings (Adam 1e-3, batch 64, 30 epochs, no "
                    "augmentation; it reported test 0.8933, macro F1 0.8928, train 1.0000), then the same network "
                    "with tfcnn's crop + flip, a cosine schedule, decoupled weight decay and label smoothing.",
        base=dict(arch="cifar_cnn", dataset="cifar100", classes=["0", "55", "58"], optimizer="adam", batch_size=64),
        variants=[dict(augment=False, epochs=30, lr=1e-3, schedule="constant", label="lecture"),
                  dict(augment=True, epochs=100, lr=2e-3, schedule="cosine", warmup_epochs=2, weight_decay=5e-4,
                       label_smoothing=0.1, label="aug-cosine-100"),
                  dict(augment=True, epochs=100, lr=2e-3, schedule="cosine", warmup_epochs=2, weight_decay=5e-4,
                       label_smoothing=0.1, cutout=8, label="aug-cutout8-cosine-100"),
                  dict(augment=True, epochs=200, lr=2e-3, schedule="cosine", warmup_epochs=2, weight_decay=5e-4,
                       label_smoothing=0.1, label="aug-cosine-200"),
                  dict(augment=True, epochs=200, lr=2e-3, schedule="cosine", warmup_epochs=2, weight_decay=5e-4,
                       label_smoothing=0.1, cutout=8, label="aug-cutout8-cosine-200"),
                  # AdamW's decay is scaled by the learning rate: 5e-4 x 2e-3 per step barely moves a weight.
                  dict(augment=True, epochs=200, lr=2e-3, schedule="cosine", warmup_epochs=2, weight_decay=0.05,
                       label_smoothing=0.1, cutout=8, label="aug-cutout8-wd0.05-cosine-200"),
                  dict(augment=True, epochs=200, lr=5e-3, schedule="cosine", warmup_epochs=2, weight_decay=0.05,
                       label_smoothing=0.1, cutout=8, label="aug-cutout8-wd0.05-lr5e-3-cosine-200"),
                  dict(augment=True, epochs=100, optimizer="sgd", lr=0.05, schedule="cosine", warmup_epochs=2,
                       weight_decay=5e-4, label_smoothing=0.1, cutout=8, label="sgd-aug-cutout8-cosine-100"),
                  dict(augment=True, epochs=100, optimizer="sam", lr=0.05, schedule="cosine", warmup_epochs=2,
                       weight_decay=5e-4, label_smoothing=0.1, cutout=8, label="sam-aug-cutout8-cosine-100")],
    ),
    "cifar-cnn-seeds": dict(
        description="The cifar_cnn recipe picked from the grid cifar-cnn-lecture (sgd-aug-cutout8-cosine-100, the best "
                    "test accuracy of one seed there, so that figure is optimistic) re-run with three fresh seeds, which "
                    "are the unbiased estimate: SGD 0.05 Nesterov, cosine with 2 warmup epochs, 100 epochs, crop + flip + "
                    "8-pixel cutout, weight decay 5e-4, label smoothing 0.1. The seed also draws the validation split.",
        base=dict(arch="cifar_cnn", dataset="cifar100", classes=["0", "55", "58"], batch_size=64, augment=True,
                  epochs=100, optimizer="sgd", lr=0.05, schedule="cosine", warmup_epochs=2, weight_decay=5e-4,
                  label_smoothing=0.1, cutout=8),
        variants=[dict(seed=1), dict(seed=2), dict(seed=3)],
    ),
    "resnet-recipe": dict(
        description="Short runs for the ResNet-32 60-epoch recipe (issue 11): ResNet-20 (stack_n 3), 20 epochs, the "
                    "recipe of configs/resnet32_cifar10_fast.yaml (SGD 0.1 Nesterov, batch 128, cosine after 1 warmup "
                    "epoch, label smoothing 0.1) with its two regularisers varied, 2 x 2: L2 5e-4 (the file's; Keras' "
                    "L2 adds wd x w^2 to the loss, so its gradient is PyTorch's weight_decay 1e-3) or 2.5e-4 (PyTorch's "
                    "usual 5e-4), and cutout 16 (the file's) or 8. The 60-epoch ResNet-32 with the file's recipe "
                    "ended with train accuracy (0.919, augmented) below validation (0.924): too much regularisation "
                    "for 60 epochs?",
        base=dict(arch="resnet", stack_n=3, dataset="cifar10", optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True,
                  batch_size=128, epochs=20, schedule="cosine", warmup_epochs=1, label_smoothing=0.1),
        variants=[dict(weight_decay=5e-4, cutout=16, label="l2-5e-4-cutout16"),
                  dict(weight_decay=2.5e-4, cutout=16, label="l2-2.5e-4-cutout16"),
                  dict(weight_decay=5e-4, cutout=8, label="l2-5e-4-cutout8"),
                  dict(weight_decay=2.5e-4, cutout=8, label="l2-2.5e-4-cutout8")],
        quick=dict(limit_train=512, limit_test=500),
    ),
    "reptiles-transfer": dict(
        description="The ResNet lab's transfer: the ResNet-32 trained on CIFAR-10 (configs/resnet32_cifar10_fast.yaml, shipped as "
                    "`pretrained:resnet32-cifar10`) moved to the 15-class CIFAR-10 + reptiles set with a new 15-way head, "
                    "5 epochs each, against a fresh ResNet-32 trained from scratch for the same 5 epochs (the "
                    "CIFAR-10 recipe's lr, warmup and L2). head: only the head trains (the lab's set-up; the lab trained "
                    "it 20 epochs). last-stage: stage 3, the final BatchNorm and the head train. full-bn-frozen: everything "
                    "but BatchNorm trains at a low rate, after a 1-epoch warmup.",
        base=dict(_REPTILES, epochs=5, weight_decay=5e-4),
        variants=[dict(freeze="all", lr=0.1, label="head"), *_REPTILE_SETUPS],
        class_f1=_REPTILE_NAMES,
    ),
    "reptiles-transfer-20": dict(
        description="The ResNet lab's transfer at the lab's budget, 20 epochs: the ResNet-32 of "
                    "configs/resnet32_cifar10_fast.yaml (`pretrained:resnet32-cifar10`) moved to the 15-class CIFAR-10 + "
                    "reptiles set with a new 15-way head, against a fresh ResNet-32 trained from scratch for the same 20 "
                    "epochs. head-lab: only the head trains, no class weights (the lab's set-up). The others weigh each "
                    "image's loss by the square root of its class's balanced weight (--class-weight sqrt: a reptile image "
                    "counts ~3.2x a CIFAR-10 one), which the 5-epoch probe showed lifts the reptiles' recall. last-stage: "
                    "stage 3, the final BatchNorm and the head train. full-bn-frozen: everything but BatchNorm trains at "
                    "a low rate after a 1-epoch warmup.",
        base=dict(_REPTILES, epochs=20, weight_decay=2.5e-4, class_weight="sqrt"),
        variants=[dict(freeze="all", lr=0.1, class_weight="none", label="head-lab"), *_REPTILE_SETUPS],
        class_f1=_REPTILE_NAMES,
    ),
}
# --quick: a smoke run of the grid, not a result.
QUICK = dict(epochs=1, limit_train=256, limit_test=500)
# Fields that may differ between a finished run and the request that reuses it.
_FREE = REUSE_FREE


# ---------------------------------------------------------------- grids and their configurations

def load_grid(name_or_path):
    """(name, grid dict) for a GRIDS name or a .yaml/.json grid file."""
    if name_or_path in GRIDS:
        return name_or_path, GRIDS[name_or_path]
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml", ".json"):
        raise TfcnnError(f"unknown grid {name_or_path!r}; choose one of {', '.join(GRIDS)} or pass a .yaml/.json grid file")
    if not path.is_file():
        raise TfcnnError(f"grid file {path} does not exist")
    try:
        if path.suffix == ".json":
            grid = json.loads(path.read_text())
        else:
            import yaml
            grid = yaml.safe_load(path.read_text())
    except Exception as exc:
        raise TfcnnError(f"grid file {path} could not be parsed ({exc.__class__.__name__}: {str(exc).splitlines()[0]})") from None
    if not isinstance(grid, dict) or not isinstance(grid.get("variants"), list) or not grid["variants"] \
            or not all(isinstance(v, dict) for v in grid["variants"]):
        raise TfcnnError(f"grid file {path} needs `variants:` a non-empty list of mappings (and optionally `base:`)")
    unknown = sorted(set(grid) - {"name", "description", "base", "variants", "quick", "class_f1", "seeds"})
    if unknown:
        raise TfcnnError(f"grid file {path} has unknown keys {unknown}; use name, description, base, variants, "
                         "quick, class_f1, seeds")
    seeds = grid.get("seeds")
    if seeds is not None and (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
                              or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise TfcnnError(f"grid file {path}: `seeds:` must be a list of distinct integers, e.g. [1, 2, 3]")
    return str(grid.get("name") or path.stem), grid


def _label_part(key, value):
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return f"{key}{'+'.join(map(str, value))}"
    return f"{key}{value:g}" if isinstance(value, float) else f"{key}{value}"


def variant_label(variant):
    """`label` if given, else the variant's values joined: adam-tanh-lr0.01, conv_layers1; {} is baseline."""
    if variant.get("label"):
        return str(variant["label"])
    parts = [_label_part(k, v) for k, v in variant.items() if k != "label"]
    return "-".join(parts).replace("/", "_") or "baseline"


def grid_configs(name_or_path, *, quick=False, only=None, **overrides):
    """(group, [(label, Config)], varied field names, grid dict); every config is validated before any run."""
    from tfcnn.config import Config, make_config

    name, grid = load_grid(name_or_path)
    variants = [dict(v) for v in grid["variants"]]
    varied = list(dict.fromkeys(k for v in variants for k in v if k != "label"))
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(overrides) - set(Config.__dataclass_fields__))
    if unknown:
        raise TfcnnError(f"unknown config fields {unknown}; a grid override must be a field of "
                         "tfcnn.config.Config (see python -m tfcnn.train --help)")
    clash = sorted(set(overrides) & set(varied))
    if clash:
        raise TfcnnError(f"grid {name} varies {', '.join(clash)}; an override of it would make the variants "
                         "equal: drop it, or write a grid file with the values you want")
    labels = [variant_label(v) for v in variants]
    if len(set(labels)) != len(labels):
        raise TfcnnError(f"grid {name} has variants with the same label; give them distinct `label:` values")
    if only is not None:
        if isinstance(only, int):
            keep = labels[:only]
        else:
            keep = [s.strip() for s in (only.split(",") if isinstance(only, str) else only) if s.strip()]
            missing = [s for s in keep if s not in labels]
            if missing:
                raise TfcnnError(f"grid {name} has no variant {missing[0]!r}; its variants: {', '.join(labels)}")
        if not keep:
            raise TfcnnError(f"no variants selected from grid {name}; its variants: {', '.join(labels)}")
        variants, labels = zip(*[(v, lab) for v, lab in zip(variants, labels) if lab in keep])
    group = f"{name}-quick" if quick else name
    extra = {**QUICK, **grid.get("quick", {})} if quick else {}
    defaults = dict(verbose=0, tensorboard=False)
    seeds = grid.get("seeds")
    if seeds and ("seed" in overrides or "seed" in varied):
        raise TfcnnError(f"grid {name} repeats every variant over seeds {seeds}; drop the seed override")
    if seeds and quick:
        seeds = seeds[:1]  # a smoke run, not a spread
    configs = []
    for label, variant in zip(labels, variants):
        variant = {k: v for k, v in variant.items() if k != "label"}
        # With `seeds`, every variant runs once per seed (which also draws its validation split) as <label>-seed<N>.
        for seed in seeds or [None]:
            run_label = label if seed is None else f"{label}-seed{seed}"
            values = {**defaults, **grid.get("base", {}), **variant, **extra, **overrides, "name": f"{group}/{run_label}"}
            if seed is not None:
                values["seed"] = seed
            try:
                configs.append((run_label, make_config(values)))
            except TfcnnError as exc:
                raise TfcnnError(f"grid {name}, variant {label}: {exc}") from None
    return group, configs, varied, grid


# ---------------------------------------------------------------- running

def finished(config):
    """The metrics of `config`'s run if it finished with the same settings, None if it has not finished.

    Raises TfcnnError if its folder holds a run (finished or not) with other settings: those results
    must not be mixed in silently, nor a resumed run continue with changed settings.
    """
    run_dir = Path(config.runs_dir) / (config.name or "")
    saved = run_dir / "config.json"
    if not config.name or not saved.exists() or config.overwrite:
        return None
    metrics_file = run_dir / "metrics.json"
    old = json.loads(saved.read_text())
    changed = config.changed_from(old, _FREE)
    if changed:
        state = "finished" if metrics_file.exists() else "unfinished"
        raise TfcnnError(f"{run_dir} holds a {state} run with other settings ({', '.join(changed)}); use another "
                         "--runs-dir for this set of runs, or --set overwrite=true to train them again")
    return json.loads(metrics_file.read_text()) if metrics_file.exists() else None


def run(config):
    """Train `config` (tfcnn.train), or read back the metrics of its finished run with the same settings."""
    metrics = finished(config)
    if metrics is not None:
        print(f"reusing finished run {Path(config.runs_dir) / config.name}", flush=True)
        return metrics
    import keras

    from tfcnn.train import train_and_evaluate

    tf_log = logging.getLogger("tensorflow")
    level = tf_log.level
    tf_log.setLevel(logging.ERROR)  # SavedModel export's "Assets written" and retracing notices, once per run
    try:
        return train_and_evaluate(config)
    finally:
        tf_log.setLevel(level)
        keras.utils.clear_session()  # the next run starts from a clean graph and name scope


history = evaluate.history  # the notebooks' name for it


def _row(label, config, varied, metrics, error=None, class_f1=()):
    hist = history(Path(config.runs_dir) / config.name)
    last = hist.iloc[-1] if len(hist) else {}
    row = {"variant": label}
    for key in varied:
        value = getattr(config, key)
        row[key] = ",".join(map(str, value)) if isinstance(value, list) else value
    test = (metrics or {}).get("test", {})
    best_val, final_val = (metrics or {}).get("best_val_accuracy"), (metrics or {}).get("final_val_accuracy")
    final_train = last.get("accuracy") if len(hist) else None
    row.update({
        "test_accuracy": test.get("accuracy"), "f1_macro": test.get("f1_macro"),
        "best_val_accuracy": best_val, "best_epoch": (metrics or {}).get("best_epoch"),
        "final_val_accuracy": final_val, "final_train_accuracy": final_train,
        "gap_best_final_val": best_val - final_val if best_val is not None and final_val is not None else None,
        "gap_train_val": final_train - final_val if final_train is not None and final_val is not None else None,
        "epoch_time_s": (metrics or {}).get("epoch_time_s"),
        "train_images_per_s": (metrics or {}).get("train_images_per_s"), "epochs": (metrics or {}).get("epochs"),
        "params": (metrics or {}).get("params"), "train_time_s": (metrics or {}).get("train_time_s"),
        "wall_time_s": (metrics or {}).get("wall_time_s"),
        "run": str(Path(config.runs_dir) / config.name),
    })
    per_class = test.get("per_class", {})
    for name in class_f1:  # the classes a grid is about, e.g. the 5 reptiles among 15
        row[f"f1_{name}"] = per_class.get(name, {}).get("f1-score") if per_class else None
    if error:
        row["error"] = error
    return row


def run_grid(name_or_path, *, quick=False, only=None, out=None, command=None, **overrides):
    """Run (or reuse) every variant of a grid; write <out>/<grid>.{csv,md,png}; return the table.

    table.attrs holds group (the grid's folder name), varied (the varied fields) and the file paths.

    `overrides` are Config fields set on every run (runs_dir, data_dir, epochs, limit_train...);
    `only` keeps some variants (a list of labels, or the first N); `quick` = QUICK + the grid's quick;
    `command` is the command line the Markdown names (default: this call).
    A run that fails (e.g. its loss diverges) gets an `error` and empty metrics; the others still run.
    """
    import pandas as pd

    group, configs, varied, grid = grid_configs(name_or_path, quick=quick, only=only, **overrides)
    folder = Path(configs[0][1].runs_dir) / group
    out = Path(out) if out else folder
    # One process runs a grid folder at a time: two would train the same runs and resume each other's epochs.
    with runfiles.Lock(folder, "experiment grid", hint="wait for it to finish or pass another --runs-dir"):
        reused = sum(finished(config) is not None for _, config in configs)  # stale runs stop the grid here
        rows, start = [], time.perf_counter()
        for i, (label, config) in enumerate(configs, start=1):
            print(f"[{group} {i}/{len(configs)}] {label}", flush=True)
            try:
                rows.append(_row(label, config, varied, run(config), class_f1=grid.get("class_f1", ())))
            except TfcnnError as exc:  # this run's own failure (e.g. a diverging loss): the others still run
                print(f"[{group} {i}/{len(configs)}] {label} failed: {exc}", flush=True)
                rows.append(_row(label, config, varied, None, error=str(exc), class_f1=grid.get("class_f1", ())))
        wall = time.perf_counter() - start
        table = pd.DataFrame(rows)
        if grid.get("seeds"):
            table.insert(1, "setup", [label.rsplit("-seed", 1)[0] for label, _ in configs])
            table.insert(2, "seed", [config.seed for _, config in configs])
        table.attrs.update(group=group, varied=varied, markdown=str(out / f"{group}.md"),
                           csv=str(out / f"{group}.csv"), figure=str(out / f"{group}.png"))
        if command is None:
            args = [repr(str(name_or_path))] + [f"{k}={v!r}" for k, v in
                                           dict(quick=quick, only=only, **overrides).items() if v not in (None, False)]
            command = f"tfcnn.experiments.run_grid({', '.join(args)})"
        if len(table):
            write_results(table, out, group, grid=grid, configs=[c for _, c in configs], varied=varied,
                          command=command, wall_time_s=wall, reused=reused)
    return table


# ---------------------------------------------------------------- the table and the figure

_MD_COLUMNS = [("test_accuracy", "test acc", "{:.4f}"), ("f1_macro", "macro F1", "{:.4f}"),
               ("best_val_accuracy", "best val (epoch)", None), ("final_val_accuracy", "final val", "{:.4f}"),
               ("gap_best_final_val", "best - final val", "{:+.4f}"), ("gap_train_val", "train - val (final)", "{:+.4f}"),
               ("epoch_time_s", "s/epoch", "{:.1f}"), ("epochs", "epochs", "{:d}"),
               ("train_time_s", "train s", "{:.0f}"), ("params", "params", "{:,d}")]


def _cell(value, fmt):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if fmt and "d}" in fmt:
        value = int(value)
    return fmt.format(value) if fmt else str(value)


def to_markdown(table, varied=()):
    """The comparison as a Markdown table (no tabulate dependency)."""
    columns = list(_MD_COLUMNS)
    columns[2:2] = [(k, f"F1 {k[3:]}", "{:.3f}") for k in table.columns if k.startswith("f1_") and k != "f1_macro"]
    header = ["variant", *varied] + [title for _, title, _ in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * (1 + len(varied)) + ["---:"] * len(columns)) + "|"]
    for row in table.to_dict("records"):
        cells = [str(row["variant"])] + [_cell(row.get(k), None if not isinstance(row.get(k), float) else "{:g}")
                                         for k in varied]
        for key, _, fmt in columns:
            if key == "best_val_accuracy":
                best = row.get(key)
                cells.append("-" if best is None or np.isnan(best) else f"{best:.4f} ({int(row['best_epoch'])})")
            else:
                cells.append(_cell(row.get(key), fmt))
        if isinstance(row.get("error"), str):
            cells[0] += f" (failed: {row['error']})"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


_SUMMARY = [("test_accuracy", "test acc", "{:.4f}"), ("f1_macro", "macro F1", "{:.4f}"),
            ("best_val_accuracy", "best val", "{:.4f}"), ("epoch_time_s", "s/epoch", "{:.1f}"),
            ("train_time_s", "train s", "{:.0f}")]


def summarize(table):
    """A seeded grid's runs per setup: n, and mean and sample std (ddof 1) of each figure, in the grid's order."""
    import pandas as pd

    rows = []
    for setup, runs in table.groupby("setup", sort=False):
        row = {"setup": setup, "n": int(runs["test_accuracy"].notna().sum())}
        for key, _, _ in _SUMMARY:
            values = runs[key].astype(float) if key in runs else pd.Series(dtype=float)
            row[f"{key}_mean"], row[f"{key}_std"] = values.mean(), values.std(ddof=1)
        rows.append(row)
    return pd.DataFrame(rows)


def summary_markdown(summary):
    """Mean ± std per setup as a Markdown table."""
    lines = ["| setup | seeds | " + " | ".join(title for _, title, _ in _SUMMARY) + " |",
             "|---|---:|" + "|".join(["---:"] * len(_SUMMARY)) + "|"]
    for row in summary.to_dict("records"):
        cells = [row["setup"], str(row["n"])]
        for key, _, fmt in _SUMMARY:
            mean, std = row[f"{key}_mean"], row[f"{key}_std"]
            cells.append(_cell(mean, fmt) + ("" if np.isnan(mean) or np.isnan(std) else f" ± {fmt.format(std)}"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _common_settings(configs, varied):
    """Fields every run shares that differ from the Config defaults: what the table's header states."""
    from tfcnn.config import Config

    default = Config().to_dict()
    first = configs[0].to_dict()
    skip = _FREE | set(varied) | {"seed"}
    shared = {k: v for k, v in first.items() if k not in skip and all(c.to_dict()[k] == v for c in configs)}
    keys = ["arch", "dataset", "classes", "epochs", "batch_size", "limit_train", "limit_test"]
    keys += [k for k in shared if k not in keys and shared[k] != default.get(k)]
    return ", ".join(f"{k}={shared[k]}" for k in keys if k in shared and shared[k] is not None)


def write_results(table, out, group, *, grid, configs, varied, command, wall_time_s, reused=0):
    """<out>/<group>.csv (every column), .md (the readable table) and .png (the comparison figure)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / f"{group}.csv", index=False, float_format="%.6g")
    run_walls = table["wall_time_s"].fillna(0).sum() if "wall_time_s" in table else 0
    md = [f"# Grid `{group}`", "", grid.get("description", "").strip(), "",
          f"Common settings: {_common_settings(configs, varied)}.", ""]
    if "setup" in table:
        summary = summarize(table)
        summary.to_csv(out / f"{group}_summary.csv", index=False, float_format="%.6g")
        md += [f"Each setup over seeds {', '.join(map(str, sorted(set(table['seed']))))}: mean ± sample standard "
               "deviation (ddof 1).", "", summary_markdown(summary), "", "Every run:", ""]
    md += [to_markdown(table, varied), "",
          "test acc and macro F1: the best-validation checkpoint on the test set. best val (epoch): highest "
          "validation accuracy and its 1-based epoch; best - final val: how much validation accuracy was lost by "
          "the last epoch; train - val: final training accuracy (on the training batches, during the epoch) minus "
          "final validation accuracy, the overfitting gap. s/epoch: training time per epoch on this machine (it moves "
          "with whatever else the machine runs: compare within a grid with care).", "",
          f"Command: `{command}`  ",
          f"Time: the runs' own wall times (training and evaluation, from their metrics.json) sum to "
          f"{run_walls:.0f} s; " + (f"all {len(table)} runs were read back from an earlier invocation. "
                                    if reused == len(table) else
                                    f"this invocation took {wall_time_s:.0f} s ({reused} finished run(s) read back). ")
          + f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU core(s).", ""]
    (out / f"{group}.md").write_text("\n".join(md))
    plot_grid(table, out / f"{group}.png", title=group)
    return out


def plot_grid(table, path, title=None):
    """Bar chart of test accuracy per variant and validation-accuracy curves per variant."""
    import matplotlib
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    seeded = "setup" in table
    summary = summarize(table) if seeded else None
    labels = list(summary["setup"] if seeded else table["variant"])
    acc = (summary["test_accuracy_mean"] if seeded else table["test_accuracy"]).astype(float).to_numpy()
    spread = summary["test_accuracy_std"].astype(float).to_numpy() if seeded else None
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(13, max(3.5, 0.42 * len(labels) + 1.5)))
    colors = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")(np.arange(len(labels)) % 20)
    y = np.arange(len(labels))
    bars.barh(y, np.nan_to_num(acc), color=colors,
              xerr=None if spread is None else np.nan_to_num(spread), capsize=3)
    ends = np.nan_to_num(acc) + (0 if spread is None else np.nan_to_num(spread))  # right of the error bar
    for yi, a, end in zip(y, acc, ends):
        text = f" {a:.4f}" if np.isfinite(a) else " failed"
        bars.text(end, yi, text, va="center", fontsize=8)
    bars.set_yticks(y, labels, fontsize=8)
    bars.invert_yaxis()
    finite = acc[np.isfinite(acc)]
    low = max(0.0, float(finite.min()) - 0.05) if len(finite) else 0.0
    bars.set_xlim(low, 1.0 + (1.0 - low) * 0.12)
    bars.set_xlabel("test accuracy" + (" (mean ± std over seeds)" if seeded else ""))
    bars.grid(axis="x", alpha=0.3)
    if seeded:
        plot_seed_curves(curves, table, labels, colors)
    for label, run_dir, color in ([] if seeded else zip(labels, table["run"], colors)):
        hist = history(run_dir)
        if len(hist) and "val_accuracy" in hist:
            curves.plot(hist["epoch"], hist["val_accuracy"], marker="o", markersize=3, color=color, label=label)
    curves.xaxis.set_major_locator(MaxNLocator(integer=True))
    curves.set_xlabel("epoch")
    curves.set_ylabel("validation accuracy")
    curves.grid(alpha=0.3)
    if curves.lines:
        curves.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_seed_curves(ax, table, setups, colors=None, metric="val_accuracy"):
    """On `ax`, per setup of a seeded grid: the mean curve of its seeds and a band of ± one std across them."""
    import pandas as pd

    colors = [None] * len(setups) if colors is None else colors
    for setup, color in zip(setups, colors):
        frames = [history(run) for run in table.loc[table["setup"] == setup, "run"]]
        frames = [h.set_index("epoch")[metric] for h in frames if len(h) and metric in h]
        if frames:
            runs = pd.concat(frames, axis=1)
            mean, std = runs.mean(axis=1), runs.std(axis=1, ddof=1).fillna(0)
            line, = ax.plot(mean.index, mean, color=color, label=f"{setup} (n={runs.shape[1]})")
            ax.fill_between(mean.index, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    return ax


# ---------------------------------------------------------------- notebook helpers

def workspace(workdir=None, data_dir=None):
    """Config fields that put runs/ and saved_models/ under `workdir` (default: this checkout's root)
    and read data from data_dir, else $TFCNN_DATA_DIR, else ../shared/data next to the checkout."""
    source_root = Path(__file__).resolve().parents[1]
    root = Path(workdir) if workdir else source_root if (source_root / "pyproject.toml").exists() else Path.cwd()
    data_dir = data_dir or os.environ.get("TFCNN_DATA_DIR")
    if not data_dir and (source_root.parent / "shared" / "data").is_dir():
        data_dir = str(source_root.parent / "shared" / "data")
    return dict(runs_dir=str(root / "runs"), saved_models_dir=str(root / "saved_models"), data_dir=data_dir)


def show(table):
    """In a notebook: a grid's Markdown table (with its settings and command) and its figure."""
    from IPython.display import Image, Markdown, display

    display(Markdown(Path(table.attrs["markdown"]).read_text()), Image(filename=table.attrs["figure"]))


def validation_mistakes(dataset="notmnist", data_dir=None, *, arch="lenet5", epochs=2, limit_train=None,
                        batch_size=128, seed=0):
    """What the notMNIST lab's two mistakes cost, measured on one small model, trained three ways.

    1. correct: stratified shuffled 10% validation split, inputs standardised (train mean/std);
    2. Keras `validation_split=0.1` on the label-sorted training arrays: the last 10% of a set stored
       letter by letter holds one or two letters, which the model then never trains on;
    3. raw 0-255 pixels fed to the network (no normalisation), stratified split.
    Returns (table, val_counts): one row per setup (validation classes, val and test accuracy) and
    the per-class counts of the two validation sets.
    """
    import keras
    import pandas as pd

    from tfcnn import data, models

    ds = data.load(dataset, data_dir)
    x, y = ds.x_train, ds.y_train
    if limit_train and limit_train < len(y):
        keep = np.sort(np.random.default_rng(seed).choice(len(y), limit_train, replace=False))
        x, y = x[keep], y[keep]  # sorted indices: the stored (label) order is kept
    x_tr, y_tr, x_val, y_val = data.split_validation(x, y, 0.1, seed)
    tail = y[-int(round(0.1 * len(y))):]
    counts = pd.DataFrame({"last 10% (validation_split=0.1)": np.bincount(tail, minlength=ds.num_classes),
                           "stratified 10%": np.bincount(y_val, minlength=ds.num_classes)},
                          index=pd.Index(ds.class_names, name="class"))

    def fit(train_x, train_y, normalization, **fit_kwargs):
        keras.utils.set_random_seed(seed)
        model = models.build(arch, ds.image_shape, ds.num_classes, normalization=normalization)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        hist = model.fit(train_x.astype("float32"), train_y, epochs=epochs, batch_size=batch_size, verbose=0,
                         **fit_kwargs)
        _, test_acc = model.evaluate(ds.x_test.astype("float32"), ds.y_test, verbose=0)
        keras.utils.clear_session()
        return hist.history["val_accuracy"][-1], test_acc

    stats = [s.tolist() for s in data.normalization_stats(x_tr)]
    rows = []
    for setup, val_y, (val_acc, test_acc) in [
        ("stratified split, standardised inputs (correct)", y_val,
         fit(x_tr, y_tr, stats, validation_data=(x_val.astype("float32"), y_val))),
        ("last 10% as validation (Keras validation_split=0.1)", tail,
         fit(x, y, stats, validation_split=0.1)),
        ("stratified split, raw 0-255 pixels", y_val,
         fit(x_tr, y_tr, None, validation_data=(x_val.astype("float32"), y_val))),
    ]:
        present = [ds.class_names[c] for c in np.unique(val_y)]
        rows.append({"setup": setup, "validation classes": "".join(present) if len(present) <= 3 else
                     f"all {len(present)}", "val accuracy": val_acc, "test accuracy": test_acc})
    return pd.DataFrame(rows), counts


def linear_baseline(dataset="notmnist", data_dir=None, *, limit_train=None, seed=0, max_iter=200):
    """Test accuracy of multinomial logistic regression on standardised raw pixels (scikit-learn).

    lbfgs stops after `max_iter` iterations; `converged` says whether it got there first.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from tfcnn import data

    ds = data.load(dataset, data_dir)
    x, y = ds.x_train, ds.y_train
    if limit_train and limit_train < len(y):
        keep = np.random.default_rng(seed).choice(len(y), limit_train, replace=False)
        x, y = x[keep], y[keep]
    mean, std = data.normalization_stats(x)

    def flat(images):
        return ((images.astype("float32") - mean) / np.where(std > 0, std, 1)).reshape(len(images), -1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported as `converged` instead
        clf = LogisticRegression(max_iter=max_iter).fit(flat(x), y)
    return {"train_images": int(len(y)), "test_accuracy": float(clf.score(flat(ds.x_test), ds.y_test)),
            "iterations": int(clf.n_iter_.max()), "converged": bool(clf.n_iter_.max() < max_iter)}


# ---------------------------------------------------------------- CLI

def _parse_set(items):
    values = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TfcnnError(f"--set takes key=value (a Config field), got {item!r}")
        values[key.strip().replace("-", "_")] = value
    return values


def main(argv=None):
    parser = ArgumentParser(prog="python -m tfcnn.experiments", description=__doc__.split("\n")[0])
    parser.add_argument("grid", nargs="?", help=f"a grid name ({', '.join(GRIDS)}) or a .yaml/.json grid file")
    parser.add_argument("--list", action="store_true", help="list the built-in grids and their variants")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of every run (default: the grid's)")
    parser.add_argument("--limit-train", type=int, default=None, help="train every run on the first N training images (default: all)")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK} (+ the grid's own quick settings)")
    parser.add_argument("--only", default=None, help="comma list of variant labels to run")
    parser.add_argument("--runs-dir", default=None, help="where the run folders go (default runs)")
    parser.add_argument("--out", default=None, help="folder for <grid>.csv/.md/.png (default <runs-dir>/<grid>)")
    parser.add_argument("--data-dir", default=None, help="dataset folder (default $TFCNN_DATA_DIR, else ./data)")
    parser.add_argument("--set", dest="sets", action="append", metavar="KEY=VALUE",
                        help="a Config field for every run, e.g. --set width=1000 (repeatable)")
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    if args.list:
        for name, grid in GRIDS.items():
            print(f"{name}: {', '.join(variant_label(v) for v in grid['variants'])}")
        return 0
    if not args.grid:
        raise TfcnnError("name a grid (python -m tfcnn.experiments --list) or a .yaml/.json grid file")
    overrides = {**_parse_set(args.sets), "epochs": args.epochs, "limit_train": args.limit_train,
                 "runs_dir": args.runs_dir, "data_dir": args.data_dir}
    command = "python -m tfcnn.experiments " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    table = run_grid(args.grid, quick=args.quick, only=args.only, out=args.out, command=command, **overrides)
    print(to_markdown(table, table.attrs["varied"]))
    print(f"-> {table.attrs['markdown']}, {table.attrs['csv']}, {table.attrs['figure']}")
    return 1 if "error" in table and table["error"].notna().any() else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
