"""The one config object: every hyperparameter of a run, its per-arch defaults and its CLI flags.

Precedence, lowest first: dataclass defaults < ARCH_DEFAULTS[arch] < --config file < explicit flags.
"""
import argparse
import dataclasses
import json
import math
import typing
from pathlib import Path

from tfcnn.errors import TfcnnError

OPTIMIZERS = ("sgd", "adam", "sam", "muon")
SCHEDULES = ("constant", "step", "cosine", "triangle")
CLASS_WEIGHTS = ("none", "balanced", "sqrt")
STRATEGIES = ("auto", "default", "mirrored", "multiworker")
PRECISIONS = ("auto", "float32", "float16", "bfloat16")
CHECKPOINTS = ("best", "last")
HYPERPARAMETERS = ("keras", "decoupled")
FLIPS = ("random", "alternate")
PAD_MODES = ("zeros", "reflect")
TTAS = ("none", "flip", "flip-translate")
# Options passed to the model builder when set; the builder rejects the ones it does not take.
MODEL_OPTIONS = ("stack_n", "activation", "pool", "width", "alpha", "conv_layers", "dense_units", "dropout")
# Fields that change where a run's files go or what it prints, never its results: a finished run is reused
# (tfcnn.experiments) whatever they are.
REUSE_FREE = frozenset({"name", "verbose", "overwrite", "tensorboard", "data_dir", "cpu_threads", "runs_dir",
                        "saved_models_dir"})
# Fields that may also differ between an interrupted run and its resumption (tfcnn.train): a run folder may have
# been moved; peer_timeout and steps_per_execution change no result (tests/test_faults.py resumes a run with the
# latter to the plain run's metrics); the TTA pass runs after the last epoch.
RESUME_FREE = REUSE_FREE | {"peer_timeout", "steps_per_execution", "tta"}


GROUPS = ("data", "model", "optimisation", "schedule", "runtime", "transfer", "output")


def _field(default, group, help, choices=None, factory=None):
    """A Config field with its one-line help: the YAML keys, the CLI flags and the docs share it."""
    meta = {"group": group, "help": help, "choices": choices}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class Config:
    # output: where a run lives
    name: typing.Optional[str] = _field(None, "output", "run folder name under --runs-dir; the same name resumes an "
                                                         "interrupted run; none: <arch>-<dataset>-<timestamp>")
    runs_dir: str = _field("runs", "output", "folder of run folders (config, history, metrics, reports, checkpoints)")
    saved_models_dir: str = _field("saved_models", "output", "folder the final model is exported to, as <name>/")
    seed: int = _field(0, "runtime", "seed of the validation split, initialisation, shuffling and augmentation")
    deterministic: bool = _field(False, "runtime", "TensorFlow op determinism: bit-identical reruns, slower")
    overwrite: bool = _field(False, "output", "replace a finished run of the same name instead of refusing")
    checkpoint: str = _field("best", "output", "the weights a run keeps, tests and exports: best (the epoch of the "
                                               "highest validation accuracy) or last (the last epoch's; needs no "
                                               "validation split, so --val-fraction 0 trains on every image)",
                             choices=CHECKPOINTS)
    # data
    dataset: str = _field("mnist", "data", "mnist, notmnist, cifar10, cifar10_jpg, cifar100[:coarse|:SUPERCLASS|"
                                           ":ids or names], cifar10_reptiles or folder:PATH")
    data_dir: typing.Optional[str] = _field(None, "data", "folder of the dataset files; none: $TFCNN_DATA_DIR, else "
                                                          "./data")
    classes: typing.Optional[typing.List[str]] = _field(None, "data", "class subset, names or ids, comma-separated "
                                                                      "(e.g. 0,55,58); relabelled 0..K-1")
    val_fraction: float = _field(0.1, "data", "stratified, seeded share of the training images held out for "
                                              "validation (picks the best checkpoint; 0: none, with --checkpoint last)")
    augment: bool = _field(True, "data", "the dataset's augmentation: crop + flip for colour images, 2-pixel shift "
                                         "for digits and letters")
    cutout: int = _field(0, "data", "side in pixels of a square erased from each training image at a random place "
                                    "(DeVries & Taylor 2017; 0: off)")
    flip: str = _field("random", "data", "colour images' horizontal flip: random (each image, each epoch) or "
                                         "alternate (airbench: a random half flipped in epoch 0, then every image "
                                         "flips on odd epochs, so each is seen both ways in any two epochs)",
                       choices=FLIPS)
    translate: typing.Optional[int] = _field(None, "data", "random translation in pixels, up to this many in each "
                                                           "direction; none: the dataset's (4 colour, 2 digits)")
    pad_mode: str = _field("zeros", "data", "how translation fills the border: zeros, or reflect (airbench)",
                           choices=PAD_MODES)
    limit_train: typing.Optional[int] = _field(None, "data", "train on this many images (stratified), for quick runs")
    limit_test: typing.Optional[int] = _field(None, "data", "evaluate on this many test images (stratified)")
    # model
    arch: str = _field("lenet5", "model", "architecture (python -m tfcnn.models lists them); sets the per-arch "
                                          "defaults below")
    stack_n: typing.Optional[int] = _field(None, "model", "resnet: residual blocks per stage, depth 6n+2 (5: ResNet-32)")
    activation: typing.Optional[str] = _field(None, "model", "lenet5/resnet: activation", ("relu", "elu", "tanh"))
    pool: typing.Optional[str] = _field(None, "model", "lenet5: pooling", ("avg", "max"))
    width: typing.Optional[int] = _field(None, "model", "two_conv/pooled: units of the dense layer")
    alpha: typing.Optional[float] = _field(None, "model", "mobilenet_v2: width multiplier (e.g. 0.5)")
    conv_layers: typing.Optional[int] = _field(None, "model", "lenet5: convolutional layers (1-3)")
    dense_units: typing.Optional[typing.List[int]] = _field(None, "model", "lenet5: dense layer sizes, e.g. 120,84")
    dropout: typing.Optional[float] = _field(None, "model", "dropout rate before the head, where the model has one")
    whiten_init: bool = _field(False, "model", "set the 'whiten' layer's kernel from the training images' patch "
                                               "covariance before training (airbench; needs such a layer: airbench94)")
    dirac_init: bool = _field(False, "model", "start each odd square conv with identity filters on its first input "
                                              "channels (airbench's dirac init)")
    # optimisation
    epochs: int = _field(10, "optimisation", "training epochs")
    batch_size: int = _field(128, "optimisation", "images per step and replica; the global batch is batch_size x "
                                                  "replicas")
    optimizer: str = _field("adam", "optimisation", "sam = SGD with sharpness-aware minimisation; muon = conv kernels "
                                                    "by Muon (airbench94_muon: orthogonalised momentum updates, "
                                                    "--muon-lr, --muon-momentum), every other weight by sgd",
                            OPTIMIZERS)
    muon_lr: float = _field(0.24, "optimisation", "muon: the conv kernels' peak rate (the schedule scales it)")
    muon_momentum: float = _field(0.6, "optimisation", "muon: the conv kernels' Nesterov momentum")
    lr: float = _field(1e-3, "optimisation", "peak learning rate")
    momentum: float = _field(0.9, "optimisation", "SGD/SAM momentum")
    nesterov: bool = _field(True, "optimisation", "SGD/SAM Nesterov momentum")
    sam_rho: float = _field(0.05, "optimisation", "SAM neighbourhood radius (Foret et al. 2021)")
    sam_epochs: int = _field(0, "optimisation", "the last N epochs take SAM steps (--sam-rho; two passes a batch), "
                                                "the earlier ones plain steps of --optimizer: SAM late in training "
                                                "finds the flat minima of SAM throughout at a fraction of its cost "
                                                "(Zhou et al. 2025, arXiv:2410.10373); 0: off; one device")
    weight_decay: float = _field(0.0, "optimisation", "L2 in the model for resnet (as the lab), decoupled in the "
                                                      "optimizer otherwise")
    hyperparameters: str = _field("keras", "optimisation", "how --lr and --weight-decay read: keras (the mean loss's "
                                                           "lr; decay as described above) or decoupled (airbench's: "
                                                           "per 1024 images of a summed loss with Nesterov's step "
                                                           "growth divided out; decay coupled through the momentum "
                                                           "as PyTorch's SGD, of strength weight_decay / lr; SGD only)",
                                  choices=HYPERPARAMETERS)
    bn_bias_lr: float = _field(1.0, "optimisation", "learning-rate multiplier for BatchNorm biases (airbench: 64; "
                                                    "SGD only)")
    whiten_bias_lr: float = _field(1.0, "optimisation", "learning-rate multiplier for the 'whiten' layer's bias "
                                                        "(airbench94: 1; airbench94_muon: 64, with the BatchNorm "
                                                        "biases)")
    whiten_bias_epochs: typing.Optional[int] = _field(None, "optimisation", "the 'whiten' layer's bias trains for this "
                                                                            "many epochs, then stays (airbench: 3; "
                                                                            "none: always; SGD only)")
    lookahead_every: int = _field(0, "optimisation", "lookahead: every N steps an average of the weights (BatchNorm "
                                                     "statistics included) moves towards them and they are set to it, "
                                                     "with airbench's decay 0.95^5 (t/T)^3; the run ends on the "
                                                     "average (airbench: 5; 0: off; SGD only)")
    label_smoothing: float = _field(0.0, "optimisation", "label smoothing of the cross-entropy (0: off)")
    ema: float = _field(0.0, "optimisation", "momentum of an exponential moving average of the weights (Polyak "
                                             "averaging, Keras' use_ema; unlike timm's --model-ema "
                                             "it averages only the trainable weights), e.g. 0.999: "
                                             "validation, the best checkpoint and the exported model use the "
                                             "average; BatchNorm keeps the trained weights' statistics, so at "
                                             "high learning rates the average validates lower (0: off)")
    class_weight: str = _field("none", "optimisation", "weight of each training image's loss by its class: balanced "
                                                       "= n / (classes x n_class) (scikit-learn's), sqrt = its square "
                                                       "root (milder), for imbalanced sets such as cifar10_reptiles",
                               CLASS_WEIGHTS)
    # schedule
    schedule: str = _field("constant", "schedule", "learning-rate schedule over the epochs", SCHEDULES)
    milestones: typing.List[int] = _field(None, "schedule", "step schedule: epochs where lr is multiplied by --gamma, "
                                                            "e.g. 81,122", factory=lambda: [81, 122])
    gamma: float = _field(0.1, "schedule", "step schedule: factor at each milestone")
    warmup_epochs: float = _field(0.0, "schedule", "linear warmup from 0 to --lr over this many epochs; triangle: the "
                                                   "epoch of the peak")
    lr_start: float = _field(0.0, "schedule", "triangle: the first step's lr as a share of --lr (airbench 0.2)")
    lr_end: float = _field(0.0, "schedule", "triangle: the last step's lr as a share of --lr (airbench 0.07)")
    # runtime
    strategy: str = _field("auto", "runtime", "tf.distribute strategy; multiworker reads TF_CONFIG (see "
                                              "python -m tfcnn.launch)", STRATEGIES)
    mixed_precision: str = _field("auto", "runtime", "auto: bfloat16 on CPUs with native bf16, float16 on GPUs, else "
                                                     "float32", PRECISIONS)
    cpu_threads: typing.Optional[int] = _field(None, "runtime", "intra-op threads; none: TensorFlow's own pools")
    cpu_devices: int = _field(1, "runtime", "logical CPU devices (lets the mirrored strategy run on a CPU-only "
                                            "machine)")
    peer_timeout: float = _field(60.0, "runtime", "multiworker: seconds to wait for unreachable peers before giving up")
    steps_per_execution: int = _field(1, "runtime", "train batches per call into TensorFlow (Keras' "
                                                    "steps_per_execution): fewer per-step round trips for models "
                                                    "whose step takes a few ms (LeNet-5); the same batches and "
                                                    "results, but per-batch callbacks and the progress bar see one "
                                                    "call of up to N batches; model.fit only (the mirrored loop "
                                                    "runs 1)")
    # transfer learning
    init_from: typing.Optional[str] = _field(None, "transfer", "start from a trained model: a .keras file, a "
                                                               "saved_models/<name> folder or pretrained:NAME; its "
                                                               "head is replaced for the new classes")
    freeze: str = _field("none", "transfer", "what stays fixed: none | all (all but the head) | all-but-last:N (the "
                                             "last N blocks and the head train) | comma list of layer-name globs "
                                             "such as 'stem_*,stage1_*'")
    fine_tune_epochs: int = _field(0, "transfer", "second stage: epochs with everything but BatchNorm unfrozen")
    fine_tune_lr: typing.Optional[float] = _field(None, "transfer", "second stage learning rate; none: lr / 10")
    tta: str = _field("none", "output", "test-time augmentation reported beside the single view in a run's final "
                                       "metrics: flip (2 views) or flip-translate (airbench's 6 views, logits "
                                       "weighted 1/4, 1/4, 1/8 x 4; colour images)", choices=TTAS)
    # output
    tensorboard: bool = _field(True, "output", "write TensorBoard logs to <run>/logs")
    verbose: typing.Optional[int] = _field(None, "output", "Keras output: 1 progress bars, 2 one line per epoch, 0 "
                                                           "silent; none: 1 on a terminal, 2 otherwise", (0, 1, 2))

    def model_options(self):
        opts = {k: getattr(self, k) for k in MODEL_OPTIONS if getattr(self, k) is not None}
        if self.arch == "resnet":
            # Decoupled hyperparameters put the decay in the optimizer (coupled, as PyTorch's), not as L2.
            opts["weight_decay"] = 0.0 if self.hyperparameters == "decoupled" else self.weight_decay
        return opts

    def validate(self):
        from tfcnn import models  # imports Keras and TensorFlow: reading and writing configs needs neither

        def need(ok, message):
            if not ok:
                raise TfcnnError(message)

        need(self.arch in models.available(), f"unknown --arch {self.arch!r}; choose one of {', '.join(models.available())}")
        for name, field in _FIELDS.items():  # every field with choices, from its metadata
            choices = field.metadata.get("choices")
            value = getattr(self, name)
            need(not choices or value is None or value in choices,
                 f"unknown --{name.replace('_', '-')} {value!r}; choose one of {', '.join(map(str, choices or ()))}")
        for name, value in vars(self).items():  # inf passes every range check below
            need(not isinstance(value, float) or math.isfinite(value),
                 f"--{name.replace('_', '-')} must be a finite number, got {value}")
        need(self.lr > 0, f"--lr must be positive, got {self.lr}")
        need(self.fine_tune_lr is None or self.fine_tune_lr > 0, f"--fine-tune-lr must be positive, got {self.fine_tune_lr}")
        need(self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}")
        need(self.fine_tune_epochs >= 0, f"--fine-tune-epochs must be 0 or more, got {self.fine_tune_epochs}")
        need(self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}")
        need(0 <= self.val_fraction < 1, f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        need(self.val_fraction > 0 or self.checkpoint == "last",
             "--val-fraction 0 leaves no validation split to choose the best checkpoint on; add --checkpoint last "
             "(keep the last epoch's weights) or hold out a share, e.g. --val-fraction 0.1")
        need(self.stack_n is None or self.stack_n >= 1, f"--stack-n must be at least 1 (6n+2 layers), got {self.stack_n}")
        need(self.cutout >= 0, f"--cutout must be 0 (off) or a size in pixels, got {self.cutout}")
        need(0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        need(self.weight_decay >= 0, f"--weight-decay must be 0 or more, got {self.weight_decay}")
        need(0 <= self.ema < 1, f"--ema must be in [0, 1) (0: off; e.g. 0.999), got {self.ema}")
        need(0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}")
        need(self.sam_rho > 0, f"--sam-rho must be positive, got {self.sam_rho}")
        need(0 <= self.sam_epochs <= self.epochs,
             f"--sam-epochs must be between 0 (off) and --epochs ({self.epochs}), got {self.sam_epochs}")
        need(not (self.sam_epochs and self.optimizer == "sam"),
             "--optimizer sam already takes SAM steps in every epoch; --sam-epochs goes with sgd, adam or muon")
        need(0 < self.gamma <= 1, f"--gamma must be in (0, 1], got {self.gamma}")
        need(list(self.milestones) == sorted(self.milestones) and all(m > 0 for m in self.milestones),
             f"--milestones must be increasing positive epochs, got {self.milestones}")
        need(self.bn_bias_lr > 0 and self.whiten_bias_lr > 0,
             f"--bn-bias-lr and --whiten-bias-lr must be positive, got {self.bn_bias_lr} and {self.whiten_bias_lr}")
        need(self.whiten_bias_epochs is None or self.whiten_bias_epochs >= 0,
             f"--whiten-bias-epochs must be 0 or more, got {self.whiten_bias_epochs}")
        need(self.lookahead_every >= 0, f"--lookahead-every must be 0 (off) or a number of steps, got {self.lookahead_every}")
        need(self.translate is None or self.translate >= 0, f"--translate must be 0 or more pixels, got {self.translate}")
        need(0 <= self.lr_start <= 1 and 0 <= self.lr_end <= 1,
             f"--lr-start and --lr-end are shares of --lr in [0, 1], got {self.lr_start} and {self.lr_end}")
        need(self.schedule != "triangle" or 0 <= self.warmup_epochs < self.epochs,
             f"--schedule triangle peaks at --warmup-epochs, which must lie inside the {self.epochs} epochs, "
             f"got {self.warmup_epochs}")
        recipe = [flag for flag, on in (("--hyperparameters decoupled", self.hyperparameters == "decoupled"),
                                        ("--bn-bias-lr", self.bn_bias_lr != 1.0),
                                        ("--whiten-bias-lr", self.whiten_bias_lr != 1.0),
                                        ("--whiten-bias-epochs", self.whiten_bias_epochs is not None),
                                        ("--lookahead-every", self.lookahead_every > 0)) if on]
        need(not recipe or self.optimizer in ("sgd", "muon"),
             f"{', '.join(recipe)} work with --optimizer sgd or muon (airbench's recipe), not {self.optimizer}")
        need(self.muon_lr > 0 and 0 <= self.muon_momentum < 1,
             f"--muon-lr must be positive and --muon-momentum in [0, 1), got {self.muon_lr} and {self.muon_momentum}")
        one_device = (recipe + ["--optimizer muon"] * (self.optimizer == "muon")
                      + ["--sam-epochs"] * (self.sam_epochs > 0))
        need(not one_device or self.strategy in ("auto", "default"),
             f"{', '.join(one_device)} run{'s' if len(one_device) == 1 else ''} on one device; "
             f"drop --strategy {self.strategy}")
        need(not (self.lookahead_every and self.ema), "--lookahead-every and --ema both average the weights; pick one")
        need(self.cpu_devices >= 1, f"--cpu-devices must be at least 1, got {self.cpu_devices}")
        need(self.cpu_threads is None or self.cpu_threads >= 0,
             f"--cpu-threads must be 0 (TensorFlow's own pools) or more, got {self.cpu_threads}")
        need(self.peer_timeout > 0, f"--peer-timeout must be positive (seconds), got {self.peer_timeout}")
        need(self.steps_per_execution >= 1,
             f"--steps-per-execution must be at least 1 (batches per call), got {self.steps_per_execution}")
        for key in ("limit_train", "limit_test"):
            value = getattr(self, key)
            need(value is None or value >= 1, f"--{key.replace('_', '-')} must be at least 1, got {value}")
        need(self.freeze == "none" or self.init_from,
             "--freeze needs --init-from (a trained model to fine-tune); drop --freeze or add --init-from")
        return self

    def to_dict(self):
        return dataclasses.asdict(self)

    def changed_from(self, saved, free=()):
        """Fields (not in `free`) where this config differs from a saved config.json dict. A field the
        saved file lacks (written before the field existed) counts as its default, so adding a field
        does not orphan earlier runs."""
        default = Config().to_dict()
        return sorted(k for k, v in self.to_dict().items() if k not in free and saved.get(k, default[k]) != v)

    def to_json(self, path):
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


# The labs' settings. resnet = the ResNet lab (BIGBALLON cifar-10-cnn): SGD 0.1 Nesterov 0.9,
# batch 128, x0.1 at epochs 81 and 122, 200 epochs, L2 1e-4, crop+flip, per-channel standardisation.
ARCH_DEFAULTS = {
    "lenet5": dict(dataset="mnist", optimizer="adam", lr=1e-3, batch_size=128, epochs=20, schedule="cosine"),
    "two_conv": dict(dataset="notmnist", optimizer="adam", lr=1e-4, batch_size=128, epochs=10),
    "pooled": dict(dataset="notmnist", optimizer="adam", lr=1e-4, batch_size=128, epochs=10),
    # The lecture's small CNN on CIFAR-100 classes 0, 55, 58 (apple, otter, pickup_truck), no augmentation.
    "cifar_cnn": dict(dataset="cifar100", classes=["0", "55", "58"], optimizer="adam",
                      lr=1e-3, batch_size=64, epochs=30, augment=False),
    "resnet": dict(dataset="cifar10", optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, batch_size=128,
                   epochs=200, schedule="step", milestones=[81, 122], gamma=0.1, weight_decay=1e-4, stack_n=5),
    # The MobileNetV2 homework: SAM + label smoothing.
    "mobilenet_v2": dict(dataset="cifar10", optimizer="sam", lr=0.05, momentum=0.9, batch_size=128, epochs=30,
                         schedule="cosine", label_smoothing=0.1, weight_decay=5e-5),
}

_FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _coerce(name, value):
    """Turn a flag/file value into the field's type; raise TfcnnError on nonsense."""
    hint = typing.get_type_hints(Config)[name]
    kind = hint
    optional = typing.get_origin(hint) is typing.Union
    if optional:  # Optional[X] -> X
        kind = next(a for a in typing.get_args(hint) if a is not type(None))
    if value is None:
        if optional:
            return None
        raise TfcnnError(f"--{name.replace('_', '-')} needs a value, got null (in YAML, `{name}:` with nothing after "
                         f"it is null); give a value or leave the field out for its default")
    origin = typing.get_origin(kind)
    try:
        if origin in (list, typing.List):
            item = typing.get_args(kind)[0]
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            elif not isinstance(value, (list, tuple)):
                raise TypeError(value)
            return [_scalar(item, v) for v in value]
        return _scalar(kind, value)
    except (TypeError, ValueError, OverflowError):
        raise TfcnnError(f"--{name.replace('_', '-')} got {value!r}, which is not a valid "
                         f"{getattr(kind, '__name__', kind)}") from None


def _scalar(kind, value):
    """`value` (from a flag, YAML or JSON) as a str, int, float or bool; TypeError or ValueError if it is not
    one: a list or mapping, True for a number or a name, 2.5 for an integer, 5 for a yes/no."""
    if isinstance(value, (list, tuple, dict, set, bytes)):
        raise TypeError(value)
    if kind is bool:
        if isinstance(value, str):
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("1", "true", "yes")
        if isinstance(value, bool) or (isinstance(value, (int, float)) and value in (0, 1)):
            return bool(value)
        raise TypeError(value)
    if isinstance(value, bool):
        raise TypeError(value)
    if kind is int and isinstance(value, float):
        if not value.is_integer():  # also inf and nan
            raise ValueError(value)
        return int(value)
    return kind(value)


def load_file(path):
    """Read a JSON or YAML config file into a dict of known fields."""
    path = Path(path)
    if not path.is_file():
        raise TfcnnError(f"config file {path} does not exist; pass the path of a .json or .yaml file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise TfcnnError(f"config file {path} could not be read ({exc.__class__.__name__}: {exc}); save it as "
                         "UTF-8 text") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml
            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
    except Exception as exc:  # yaml/json syntax errors
        raise TfcnnError(f"config file {path} could not be parsed ({exc.__class__.__name__}: {str(exc).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise TfcnnError(f"config file {path} must hold a mapping of field: value")
    unknown = sorted(set(values) - set(_FIELDS), key=repr)  # YAML keys may be numbers, booleans or null
    if unknown:
        raise TfcnnError(f"config file {path} has unknown fields {unknown}; see python -m tfcnn.train --help")
    return values


def make_config(overrides=None, config_file=None):
    """Build a validated Config: defaults < arch defaults < file < overrides (None values ignored)."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(overrides) - set(_FIELDS))
    if unknown:
        raise TfcnnError(f"unknown config fields {unknown}")
    from_file = load_file(config_file) if config_file else {}
    arch = overrides.get("arch", from_file.get("arch", Config.arch))
    arch_defaults = dict(ARCH_DEFAULTS.get(arch, {}) if isinstance(arch, str) else {})  # a list: _coerce says so
    chosen = {**from_file, **overrides}
    if chosen.get("dataset", arch_defaults.get("dataset")) != arch_defaults.get("dataset"):
        arch_defaults.pop("classes", None)  # the arch default's classes belong to its own dataset
    values = {**arch_defaults, **chosen}
    return Config(**{k: _coerce(k, v) for k, v in values.items()}).validate()


def _default_text(field):
    if field.default_factory is not dataclasses.MISSING:
        return ",".join(map(str, field.default_factory()))
    return "none" if field.default is None else str(field.default).lower() if isinstance(field.default, bool) \
        else str(field.default)


def add_flags(parser):
    """Expose every Config field as a --flag (default None = not given), grouped by concern, each with its help,
    default and choices from the field's metadata."""
    hints = typing.get_type_hints(Config)
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for name, field in _FIELDS.items():
        flag = "--" + name.replace("_", "-")
        meta = field.metadata
        choices = meta.get("choices")
        text = f"{meta['help']} (default: {_default_text(field)}" + \
            (f"; choices: {', '.join(map(str, choices))})" if choices else ")")
        text = text.replace("%", "%%")
        group = groups[meta["group"]]
        if hints[name] is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            group.add_argument(flag, dest=name, default=None, metavar=name.upper(), type=str, help=text)
    parser.add_argument("--config", dest="config_file", default=None,
                        help="JSON or YAML file of these fields (keys as the flags, with _); flags override it")
    arch_defaults = "; ".join(f"{arch}: " + ", ".join(f"{k}={v}" for k, v in values.items())
                              for arch, values in ARCH_DEFAULTS.items())
    parser.epilog = ("Defaults shown are the dataclass defaults; each --arch first applies its lab's settings ("
                     + arch_defaults + "). Precedence: defaults < per-arch < --config file < flags.").replace("%", "%%")
    return parser


def from_args(args):
    values = vars(args).copy()
    config_file = values.pop("config_file", None)
    return make_config({k: v for k, v in values.items() if k in _FIELDS}, config_file)
