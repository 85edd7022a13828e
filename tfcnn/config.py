"""The one config object: every hyperparameter of a run, its per-arch defaults and its CLI flags.

Precedence, lowest first: dataclass defaults < ARCH_DEFAULTS[arch] < --config file < explicit flags.
"""
import argparse
import dataclasses
import json
import typing
from pathlib import Path

from tfcnn.errors import TfcnnError

OPTIMIZERS = ("sgd", "adam", "sam")
SCHEDULES = ("constant", "step", "cosine")
STRATEGIES = ("auto", "default", "mirrored", "multiworker")
PRECISIONS = ("auto", "float32", "float16", "bfloat16")
# Options passed to the model builder when set; the builder rejects the ones it does not take.
MODEL_OPTIONS = ("stack_n", "activation", "pool", "width", "alpha", "conv_layers", "dense_units", "dropout")


@dataclasses.dataclass
class Config:
    # run
    name: typing.Optional[str] = None  # run folder name; default <arch>-<dataset>-<timestamp>
    runs_dir: str = "runs"
    saved_models_dir: str = "saved_models"
    seed: int = 0
    deterministic: bool = False  # tf op determinism: bit-identical reruns, slower
    overwrite: bool = False  # allow replacing a finished run of the same name
    # data
    dataset: str = "mnist"
    data_dir: typing.Optional[str] = None
    classes: typing.Optional[typing.List[str]] = None  # class subset (names or ids)
    val_fraction: float = 0.1
    augment: bool = True
    cutout: int = 0  # side of a square erased from each train image at a random place, px (0: off)
    limit_train: typing.Optional[int] = None
    limit_test: typing.Optional[int] = None
    # model
    arch: str = "lenet5"
    stack_n: typing.Optional[int] = None
    activation: typing.Optional[str] = None
    pool: typing.Optional[str] = None
    width: typing.Optional[int] = None
    alpha: typing.Optional[float] = None
    conv_layers: typing.Optional[int] = None
    dense_units: typing.Optional[typing.List[int]] = None
    dropout: typing.Optional[float] = None
    # optimisation
    epochs: int = 10
    batch_size: int = 128  # per replica; the global batch is batch_size x replicas
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = True
    sam_rho: float = 0.05  # SAM neighbourhood size (Foret et al. 2021)
    weight_decay: float = 0.0  # L2 in the model for resnet (as the lab), decoupled in the optimizer otherwise
    schedule: str = "constant"
    milestones: typing.List[int] = dataclasses.field(default_factory=lambda: [81, 122])
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    # hardware
    strategy: str = "auto"
    mixed_precision: str = "auto"
    cpu_threads: typing.Optional[int] = None  # intra-op threads; default: TF's own pools
    cpu_devices: int = 1  # logical CPU devices (lets MirroredStrategy run on a CPU-only machine)
    peer_timeout: float = 60.0  # multiworker: seconds to wait for unreachable peers before giving up
    # transfer learning
    init_from: typing.Optional[str] = None  # a .keras file or saved_models/<name> folder
    freeze: str = "none"  # none | all (all but the head) | all-but-last:N | comma list of layer-name globs
    fine_tune_epochs: int = 0  # second stage: unfreeze everything but BatchNorm
    fine_tune_lr: typing.Optional[float] = None  # default lr / 10
    # output
    tensorboard: bool = True
    verbose: typing.Optional[int] = None  # Keras output: 1 progress bars, 2 a line per epoch, 0 none; default 1 on a terminal, else 2

    def model_options(self):
        opts = {k: getattr(self, k) for k in MODEL_OPTIONS if getattr(self, k) is not None}
        if self.arch == "resnet":
            opts["weight_decay"] = self.weight_decay
        return opts

    def validate(self):
        from tfcnn import models

        def need(ok, message):
            if not ok:
                raise TfcnnError(message)

        need(self.arch in models.available(), f"unknown --arch {self.arch!r}; choose one of {', '.join(models.available())}")
        need(self.optimizer in OPTIMIZERS, f"unknown --optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        need(self.schedule in SCHEDULES, f"unknown --schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        need(self.strategy in STRATEGIES, f"unknown --strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        need(self.mixed_precision in PRECISIONS,
             f"unknown --mixed-precision {self.mixed_precision!r}; choose one of {', '.join(PRECISIONS)}")
        need(self.lr > 0, f"--lr must be positive, got {self.lr}")
        need(self.fine_tune_lr is None or self.fine_tune_lr > 0, f"--fine-tune-lr must be positive, got {self.fine_tune_lr}")
        need(self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}")
        need(self.fine_tune_epochs >= 0, f"--fine-tune-epochs must be 0 or more, got {self.fine_tune_epochs}")
        need(self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}")
        need(0 <= self.val_fraction < 1, f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        need(self.stack_n is None or self.stack_n >= 1, f"--stack-n must be at least 1 (6n+2 layers), got {self.stack_n}")
        need(self.cutout >= 0, f"--cutout must be 0 (off) or a size in pixels, got {self.cutout}")
        need(0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        need(self.weight_decay >= 0, f"--weight-decay must be 0 or more, got {self.weight_decay}")
        need(0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}")
        need(self.sam_rho > 0, f"--sam-rho must be positive, got {self.sam_rho}")
        need(0 < self.gamma <= 1, f"--gamma must be in (0, 1], got {self.gamma}")
        need(list(self.milestones) == sorted(self.milestones) and all(m > 0 for m in self.milestones),
             f"--milestones must be increasing positive epochs, got {self.milestones}")
        need(self.cpu_devices >= 1, f"--cpu-devices must be at least 1, got {self.cpu_devices}")
        need(self.peer_timeout > 0, f"--peer-timeout must be positive (seconds), got {self.peer_timeout}")
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
    if typing.get_origin(hint) is typing.Union:  # Optional[X] -> X
        kind = next(a for a in typing.get_args(hint) if a is not type(None))
    if value is None:
        return None
    origin = typing.get_origin(kind)
    try:
        if origin in (list, typing.List):
            item = typing.get_args(kind)[0]
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            return [item(v) for v in value]
        if kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("1", "true", "yes")
            return bool(value)
        return kind(value)
    except (TypeError, ValueError):
        raise TfcnnError(f"--{name.replace('_', '-')} got {value!r}, which is not a valid {getattr(kind, '__name__', kind)}") from None


def load_file(path):
    """Read a JSON or YAML config file into a dict of known fields."""
    path = Path(path)
    if not path.is_file():
        raise TfcnnError(f"config file {path} does not exist; pass the path of a .json or .yaml file")
    text = path.read_text()
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
    unknown = sorted(set(values) - set(_FIELDS))
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
    values = {**ARCH_DEFAULTS.get(arch, {}), **from_file, **overrides}
    return Config(**{k: _coerce(k, v) for k, v in values.items()}).validate()


def add_flags(parser):
    """Expose every Config field as a --flag whose default is None (= not given)."""
    hints = typing.get_type_hints(Config)
    for name in _FIELDS:
        flag = "--" + name.replace("_", "-")
        if hints[name] is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None)
        else:
            parser.add_argument(flag, dest=name, default=None, metavar=name.upper(), type=str)
    parser.add_argument("--config", dest="config_file", default=None, help="JSON or YAML file of config fields")
    return parser


def from_args(args):
    values = vars(args).copy()
    config_file = values.pop("config_file", None)
    return make_config({k: v for k, v in values.items() if k in _FIELDS}, config_file)
