"""The model zoo: the labs' CNNs as plain builder functions, one registry, one door in.

    model = build("resnet", (32, 32, 3), 10, stack_n=5, activation="elu")

Every builder is `name(input_shape, num_classes, *, normalization=None, **options)` and
returns a Functional `keras.Model` that ends in the same two layers: `Dense(num_classes,
name="predictions")` (logits) -> `Activation("softmax", dtype="float32", name="probs")`.
Transfer learning swaps those two by taking the output of the layer that feeds
"predictions"; the float32 softmax keeps mixed precision numerically safe.

`normalization=(mean, std)` takes per-channel statistics on the 0-255 pixel scale and puts
a constant `Normalization` layer named "normalize" right after the input, so an exported
model takes raw pixels.

`load_model(path)` loads what tfcnn saved: a .keras file, a saved_models/<name> folder or pretrained:NAME,
in Keras' safe mode (a model file never runs code).

CLI: python -m tfcnn.models resnet --stack-n 3 --activation elu [--dataset cifar100] [--json]
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import inspect  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

from tfcnn import optim  # noqa: E402, F401  (registers the schedules and optimizers a .keras file may name)
from tfcnn import compat, meta as meta_lib, pretrained  # noqa: E402
from tfcnn.errors import ArgumentParser, TfcnnError, run_cli  # noqa: E402
from tfcnn.layers import GELU, FusedBatchNormalization  # noqa: E402

MODELS = {}

# Input shapes and class counts by dataset name, so the CLI can size a model without
# loading data. The data module owns the data itself.
DATASETS = {
    "mnist": ((28, 28, 1), 10),
    "notmnist": ((28, 28, 1), 10),
    "cifar10": ((32, 32, 3), 10),
    "cifar100": ((32, 32, 3), 100),
    "cifar10_reptiles": ((32, 32, 3), 15),
}

# The input each lab built the model for; the CLI's default when no shape is given.
NATURAL_INPUT = {
    "two_conv": ((28, 28, 1), 10),
    "pooled": ((28, 28, 1), 10),
    "lenet5": ((28, 28, 1), 10),
    "cifar_cnn": ((32, 32, 3), 3),  # the lecture's 3-class CIFAR subset
}
DEFAULT_INPUT = ((32, 32, 3), 10)


def register(fn):
    """Add a builder to MODELS under its function name (timm's @register_model)."""
    MODELS[fn.__name__] = fn
    return fn


def available():
    """Names of all registered architectures, sorted."""
    return sorted(MODELS)


def options_of(name):
    """The keyword options of a registered builder and their defaults."""
    params = inspect.signature(_builder(name)).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build(name, input_shape, num_classes, **options):
    """The one door in: build the registered architecture `name` (see `available()`)."""
    builder = _builder(name)
    accepted = options_of(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TfcnnError(f"{name} has no option {', '.join(map(repr, unknown))}; "
                         f"its options are: {', '.join(accepted)}")
    return builder(input_shape, num_classes, **options)


def _builder(name):
    if name not in MODELS:
        raise TfcnnError(f"unknown architecture {name!r}; available: {', '.join(available())}")
    return MODELS[name]


def load_model(path):
    """Load a .keras file, the model.keras inside a saved_models/<name> folder, or pretrained:NAME
    (a shipped model, after its checksums are verified).

    A model file is data, never code: Keras' safe mode is on (safe_mode=True, and tfcnn.compat.safe_mode() against
    a process-wide keras.config.enable_unsafe_deserialization()), so a Lambda layer's Python function, or a function or
    class outside Keras and the objects tfcnn registers, is refused with one TfcnnError line. So is a model
    whose metadata (tfcnn.json or X.json beside it) disagrees with its graph (tfcnn.meta.check_graph).
    """
    path = Path(pretrained.resolve(path))
    candidate = path / "model.keras" if path.is_dir() else path
    if not candidate.exists():
        raise TfcnnError(f"no model at {path}; pass a .keras file or a saved_models/<name> folder")
    try:
        with compat.safe_mode():
            model = keras.models.load_model(candidate, compile=False, safe_mode=True)
    except Exception as exc:
        if "safe_mode" in str(exc):  # Keras' refusal of a Lambda layer's Python code
            raise TfcnnError(f"{candidate} carries Python code (a Lambda layer), which tfcnn never runs from a model "
                             "file; rebuild the model without Lambda layers") from None
        raise TfcnnError(f"{candidate} could not be loaded as a Keras model ({exc.__class__.__name__}); "
                         "is it a file written by tfcnn.train?") from None
    meta = meta_lib.read_meta(path)  # unreadable or malformed metadata: read_meta's own TfcnnError line
    meta_lib.check_graph(meta, model.input_shape[1:], model.output_shape[-1], candidate)
    return model


# --- argument checks: user errors become one TfcnnError line -------------------------------

def _check_int(option, value, minimum=1, maximum=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum or (
            maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise TfcnnError(f"{option} must be an integer {bound}, got {value!r}")
    return int(value)


def _check_float(option, value, minimum=0.0, maximum=None, open_min=False, open_max=False):
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = np.isfinite(value) and (value > minimum if open_min else value >= minimum)
        if ok and maximum is not None:
            ok = value < maximum if open_max else value <= maximum
    if not ok:
        low = f"{'>' if open_min else '>='} {minimum}"
        high = "" if maximum is None else f" and {'<' if open_max else '<='} {maximum}"
        raise TfcnnError(f"{option} must be a number {low}{high}, got {value!r}")
    return value


def _check_choice(option, value, choices):
    if value not in choices:
        raise TfcnnError(f"{option} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _check_min_size(arch, inputs, min_size, why):
    height, width = inputs.shape[1:3]
    if min(height, width) < min_size:
        raise TfcnnError(f"{arch} needs inputs of at least {min_size}x{min_size} ({why}); "
                         f"got {height}x{width}")


# --- shared pieces: input + normalization, classifier head ---------------------------------

def _input_and_normalization(input_shape, normalization, rescale_fallback=False):
    """keras.Input plus the constant per-channel normalization (0 parameters)."""
    if (not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3
            or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0
                       for d in input_shape)):
        raise TfcnnError(f"input_shape must be (height, width, channels) positive integers, "
                         f"got {input_shape!r}")
    input_shape = tuple(int(d) for d in input_shape)
    inputs = keras.Input(shape=input_shape, name="input")
    if normalization is None:
        # The lecture's cifar_cnn scaled pixels inside the model; keep that when no stats are given.
        x = layers.Rescaling(1.0 / 255, name="rescale")(inputs) if rescale_fallback else inputs
        return inputs, x
    mean, std = _check_normalization(normalization, input_shape[-1])
    x = layers.Normalization(mean=mean, variance=np.square(std), name="normalize")(inputs)
    return inputs, x


def _check_normalization(normalization, channels):
    try:
        mean, std = normalization
        mean = np.asarray(mean, dtype="float64").reshape(-1)
        std = np.asarray(std, dtype="float64").reshape(-1)
    except (TypeError, ValueError):
        raise TfcnnError("normalization must be (mean, std), per-channel lists on the 0-255 "
                         f"pixel scale, got {normalization!r}") from None
    if mean.shape != (channels,) or std.shape != (channels,):
        raise TfcnnError(f"normalization mean and std need {channels} values each (one per "
                         f"channel), got {mean.size} and {std.size}")
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
        raise TfcnnError(f"normalization std must be positive and finite, got {std.tolist()}")
    return mean.tolist(), std.tolist()


def classifier(x, num_classes, **dense_kwargs):
    """Logits layer "predictions" + float32 softmax "probs": the head transfer learning swaps."""
    num_classes = _check_int("num_classes", num_classes, minimum=1)
    x = layers.Dense(num_classes, name="predictions", **dense_kwargs)(x)
    return layers.Activation("softmax", dtype="float32", name="probs")(x)


def _pooling(kind, size, name):
    pool = {"max": layers.MaxPooling2D, "avg": layers.AveragePooling2D}[kind]
    return pool(size, name=name)


# --- notMNIST lab ---------------------------------------------------------------------------

@register
def two_conv(input_shape, num_classes, *, normalization=None, width=5000):
    """notMNIST lab task 1: two 3x3 ReLU convs (16, 32), one wide hidden Dense layer.

    No pooling, so the Dense layer sees the full 28x28x32 map: 125,499,810 parameters on
    28x28x1 / 10 classes at width 5000, nearly all in that one layer (the lab's point).
    """
    width = _check_int("width", width)
    inputs, x = _input_and_normalization(input_shape, normalization)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(width, activation="relu", name="fc1")(x)
    return keras.Model(inputs, classifier(x, num_classes), name="two_conv")


@register
def pooled(input_shape, num_classes, *, normalization=None, width=5000, pool="max"):
    """notMNIST lab task 2: task 1 with the second conv replaced by 2x2 pooling.

    Pooling quarters the flattened map, so 15,735,170 parameters on 28x28x1 / 10 / 5000.
    """
    width = _check_int("width", width)
    pool = _check_choice("pool", pool, ("max", "avg"))
    inputs, x = _input_and_normalization(input_shape, normalization)
    _check_min_size("pooled", inputs, 2, "one 2x2 pooling")
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(x)
    x = _pooling(pool, 2, name="pool1")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(width, activation="relu", name="fc1")(x)
    return keras.Model(inputs, classifier(x, num_classes), name="pooled")


# --- MNIST lab ------------------------------------------------------------------------------

@register
def lenet5(input_shape, num_classes, *, normalization=None, activation="tanh", pool="avg",
           conv_layers=2, dense_units=(120, 84)):
    """LeNet-5 (LeCun et al. 1998) on 28x28: 61,706 parameters on 28x28x1 / 10 classes.

    C1 is padded "same" so 28x28 inputs give the paper's 32x32-input feature maps.
    `conv_layers` is the MNIST lab's depth knob ("accuracy vs number of layers"):
      1: C1 (6@5x5, same) -> 2x2 pool -> dense layers
      2: + C3 (16@5x5, valid) -> 2x2 pool                       (the classic LeNet-5)
      3: + C5 (120@5x5, valid, no pooling: 5x5 -> 1x1 on 28x28) (as in the paper's C5)
    `dense_units` are the hidden Dense layers before the classifier (F6-style, tanh by
    default); () gives a linear classifier on the conv features.
    """
    activation = _check_choice("activation", activation, ("tanh", "relu", "elu"))
    pool = _check_choice("pool", pool, ("avg", "max"))
    conv_layers = _check_int("conv_layers", conv_layers, minimum=1, maximum=3)
    if isinstance(dense_units, (int, np.integer)):
        dense_units = (dense_units,)
    try:
        dense_units = tuple(_check_int("dense_units", u) for u in dense_units)
    except TypeError:
        raise TfcnnError(f"dense_units must be a list of positive integers, got {dense_units!r}") \
            from None
    inputs, x = _input_and_normalization(input_shape, normalization)
    _check_min_size("lenet5", inputs, {1: 2, 2: 12, 3: 28}[conv_layers],
                    f"{conv_layers} conv layer(s) with valid 5x5 convs and 2x2 pooling")
    x = layers.Conv2D(6, 5, padding="same", activation=activation, name="conv1")(x)
    x = _pooling(pool, 2, name="pool1")(x)
    if conv_layers >= 2:
        x = layers.Conv2D(16, 5, activation=activation, name="conv2")(x)
        x = _pooling(pool, 2, name="pool2")(x)
    if conv_layers >= 3:
        x = layers.Conv2D(120, 5, activation=activation, name="conv3")(x)
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate(dense_units, start=1):
        x = layers.Dense(units, activation=activation, name=f"fc{i}")(x)
    return keras.Model(inputs, classifier(x, num_classes), name="lenet5")


# --- CIFAR lecture --------------------------------------------------------------------------

@register
def cifar_cnn(input_shape, num_classes, *, normalization=None):
    """The CIFAR lecture's small net: 21,699 parameters on 32x32x3 / 3 classes.

    The lecture normalized inside the model, so without `normalization` the pixels are
    rescaled to [0, 1] by a "rescale" layer. A strided 5x5 conv does the early
    downsampling (32 -> 8), 4x4 average pooling leaves a 2x2x64 = 256-wide feature.
    """
    inputs, x = _input_and_normalization(input_shape, normalization, rescale_fallback=True)
    _check_min_size("cifar_cnn", inputs, 13, "a stride-4 conv then 4x4 pooling")
    x = layers.Conv2D(32, 5, strides=4, padding="same", activation="relu", name="conv1")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.AveragePooling2D(4, name="avg_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, classifier(x, num_classes), name="cifar_cnn")


# --- ResNet lab -----------------------------------------------------------------------------

def _bn(name):
    # BIGBALLON cifar-10-cnn / the Torch defaults: momentum 0.9, epsilon 1e-5.
    return FusedBatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


def residual_block_v2(x, filters, stride, conv_shortcut, name, activation="relu",
                      regularizer=None):
    """Pre-activation block (He et al. 2016, "Identity Mappings in Deep Residual Networks").

    BN -> act -> conv3x3(stride) -> BN -> act -> conv3x3, plus the shortcut. On downsampling
    the shortcut is a 1x1 stride-2 projection of the pre-activated input (as the paper and
    the lab's Torch reference do; BIGBALLON's Keras code projects the raw input instead,
    which has the same parameter count).
    """
    conv = dict(padding="same", kernel_initializer="he_normal", kernel_regularizer=regularizer)
    preact = _bn(f"{name}_preact_bn")(x)
    preact = layers.Activation(activation, name=f"{name}_preact_{activation}")(preact)
    if conv_shortcut:
        shortcut = layers.Conv2D(filters, 1, strides=stride, name=f"{name}_shortcut_conv",
                                 **conv)(preact)
    else:
        shortcut = x
    x = layers.Conv2D(filters, 3, strides=stride, name=f"{name}_conv1", **conv)(preact)
    x = _bn(f"{name}_conv1_bn")(x)
    x = layers.Activation(activation, name=f"{name}_conv1_{activation}")(x)
    x = layers.Conv2D(filters, 3, name=f"{name}_conv2", **conv)(x)
    return layers.Add(name=f"{name}_add")([shortcut, x])


def stack_residual_blocks_v2(x, filters, blocks, stride, name, **block_kwargs):
    """One stage: `blocks` pre-activation blocks; the first may downsample and project."""
    x = residual_block_v2(x, filters, stride, stride != 1 or x.shape[-1] != filters,
                          name=f"{name}_block1", **block_kwargs)
    for i in range(2, blocks + 1):
        x = residual_block_v2(x, filters, 1, False, name=f"{name}_block{i}", **block_kwargs)
    return x


@register
def resnet(input_shape, num_classes, *, normalization=None, stack_n=5, activation="relu",
           weight_decay=1e-4):
    """CIFAR pre-activation ResNet-(6n+2) of the ResNet lab (He et al. 2016, CIFAR setup).

    16/32/64 filters in three stages of `stack_n` blocks; stages 2 and 3 start with stride 2.
    Convs keep their biases, as BIGBALLON's cifar-10-cnn Keras code does. Parameters on
    32x32x3 / 10 classes: stack_n 3 -> 274,442 (ResNet-20), 5 -> 470,218 (ResNet-32),
    18 -> 1,742,762 (ResNet-110). `activation="elu"` is the ELU variant of Shah et al.
    2016, "Deep Residual Networks with Exponential Linear Unit" (same parameter count).
    `weight_decay` is the L2 factor on conv and dense kernels (0 turns it off).
    """
    stack_n = _check_int("stack_n", stack_n)
    activation = _check_choice("activation", activation, ("relu", "elu"))
    weight_decay = _check_float("weight_decay", weight_decay)
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None

    inputs, x = _input_and_normalization(input_shape, normalization)
    x = layers.Conv2D(16, 3, padding="same", kernel_initializer="he_normal",
                      kernel_regularizer=regularizer, name="stem_conv")(x)
    for stage, (filters, stride) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
        x = stack_residual_blocks_v2(x, filters, stack_n, stride, name=f"stage{stage}",
                                     activation=activation, regularizer=regularizer)
    x = _bn("final_bn")(x)
    x = layers.Activation(activation, name=f"final_{activation}")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = classifier(x, num_classes, kernel_initializer="he_normal",
                          kernel_regularizer=regularizer)
    suffix = "" if activation == "relu" else f"_{activation}"
    return keras.Model(inputs, outputs, name=f"resnet{6 * stack_n + 2}{suffix}")


# --- CIFAR-10 speedrun (airbench94) ---------------------------------------------------------

def _torch_uniform():
    """PyTorch's default conv/linear init, uniform(+-1/sqrt(fan_in)), which airbench's recipe was tuned on
    (Keras' default is Glorot)."""
    return keras.initializers.VarianceScaling(scale=1 / 3, mode="fan_in", distribution="uniform")


def _speedrun_bn(name):
    # airbench: PyTorch momentum 0.4 (= Keras 0.6), no scale (its BatchNorm weights are frozen at 1). Its
    # epsilon 1e-12 is below TF's fused-kernel floor (1.001e-5), which the variances here dwarf.
    return FusedBatchNormalization(momentum=0.6, epsilon=1e-5, scale=False, name=name)


def _activation_layer(activation, name):
    if activation == "gelu":
        return GELU(name=name)
    return layers.Activation(activation, name=name)


def conv_group(x, filters, name, activation="gelu"):
    """airbench's ConvGroup: conv -> 2x2 max-pool -> BN -> act -> conv -> BN -> act (no residual)."""
    conv = dict(padding="same", use_bias=False, kernel_initializer=_torch_uniform())
    x = layers.Conv2D(filters, 3, name=f"{name}_conv1", **conv)(x)
    x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    x = _speedrun_bn(f"{name}_bn1")(x)
    x = _activation_layer(activation, f"{name}_{activation}1")(x)
    x = layers.Conv2D(filters, 3, name=f"{name}_conv2", **conv)(x)
    x = _speedrun_bn(f"{name}_bn2")(x)
    return _activation_layer(activation, f"{name}_{activation}2")(x)


@register
def airbench94(input_shape, num_classes, *, normalization=None, activation="gelu"):
    """The airbench94 network (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU",
    arXiv:2404.00498; pip airbench 0.1.8), the CIFAR-10 speedrun's net.

    A frozen 2x2 "whiten" conv (24 filters: the training patches' whitening and its negative, set from
    data by tfcnn.recipe.init_whitening; only its bias trains, for the first --whiten-bias-epochs),
    three conv groups of 64 / 256 / 256, a global max-pool and a bias-free linear head scaled by 1/9.
    1,971,640 weights on 32x32x3 / 10 classes, the published net's count; Keras' total adds the
    BatchNorm moving means and variances (2 x 1,152), which PyTorch counts as buffers.
    """
    activation = _check_choice("activation", activation, ("gelu", "relu"))
    inputs, x = _input_and_normalization(input_shape, normalization)
    _check_min_size("airbench94", inputs, 17, "a 2x2 valid conv then three 2x2 max-pools")
    x = layers.Conv2D(8 * input_shape[-1], 2, padding="valid",
                      kernel_initializer=_torch_uniform(), bias_initializer="zeros", name="whiten")(x)
    x = _activation_layer(activation, f"whiten_{activation}")(x)
    for i, filters in enumerate((64, 256, 256), start=1):
        x = conv_group(x, filters, name=f"group{i}", activation=activation)
    x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    x = layers.Rescaling(1 / 9, name="head_scale")(x)  # airbench's scaling_factor, before the linear head
    outputs = classifier(x, num_classes, use_bias=False, kernel_initializer=_torch_uniform())
    model = keras.Model(inputs, outputs, name="airbench94")
    model.get_layer("whiten").kernel.trainable = False  # set from data, never trained; its bias trains
    return model


# --- homework transfer experiments ----------------------------------------------------------

def _make_divisible(v, divisor=8, min_value=None):
    """Round channels to a multiple of `divisor`, never more than 10% down (MobileNetV2 code)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _mbv2_bn(name):
    # Keras applications' epsilon 1e-3, but momentum 0.9 (not 0.999): the homework's short CPU runs take a
    # few hundred steps, after which 0.999 moving statistics are still ~90% at their initial values and
    # the model evaluates at chance (measured in notebooks/05). 0.9 is also the ResNet lab's setting.
    return FusedBatchNormalization(epsilon=1e-3, momentum=0.9, name=name)


def inverted_residual_block(x, expansion, filters, stride, alpha, name):
    """MobileNetV2 bottleneck (Sandler et al. 2018): 1x1 expand -> ReLU6 -> 3x3 depthwise ->
    ReLU6 -> 1x1 linear projection; identity shortcut when the shape is unchanged."""
    in_channels = x.shape[-1]
    out_channels = _make_divisible(int(filters * alpha), 8)
    inputs = x
    if expansion != 1:
        x = layers.Conv2D(expansion * in_channels, 1, use_bias=False, name=f"{name}_expand")(x)
        x = _mbv2_bn(f"{name}_expand_bn")(x)
        x = layers.ReLU(6.0, name=f"{name}_expand_relu6")(x)
    # TF "same" padding at stride 2 on even sizes pads bottom/right only, which is what
    # Keras applications' correct_pad + "valid" computes too.
    x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                               name=f"{name}_depthwise")(x)
    x = _mbv2_bn(f"{name}_depthwise_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_depthwise_relu6")(x)
    # Linear bottleneck: no activation after the projection (the paper's section 3.2).
    x = layers.Conv2D(out_channels, 1, use_bias=False, name=f"{name}_project")(x)
    x = _mbv2_bn(f"{name}_project_bn")(x)
    if stride == 1 and in_channels == out_channels:
        x = layers.Add(name=f"{name}_add")([inputs, x])
    return x


# Sandler et al. 2018, Table 2: (expansion t, channels c, blocks n, stride s) per stage, with
# the stride of stage 2 (24 channels) lowered from 2 to 1 for 32x32 inputs.
MOBILENET_V2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),  # ImageNet: stride 2
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


@register
def mobilenet_v2(input_shape, num_classes, *, normalization=None, alpha=0.5, dropout=0.0):
    """MobileNetV2 (Sandler et al. 2018) for 32x32 inputs, for the homework's transfer runs.

    Stem conv and stage 2 use stride 1 instead of 2 (as common CIFAR ports do), so a 32x32
    image ends on a 4x4 map rather than 1x1. Strides do not change the parameter count,
    which equals Keras applications' MobileNetV2 with a 10-class top. On 32x32x3 / 10:
    alpha 0.5 -> 719,034 parameters (700,490 trainable); alpha 1.0 -> 2,270,794
    (2,236,682 trainable). The 1280-wide head conv is not thinned for alpha < 1 (paper).
    `dropout` > 0 adds Dropout before the classifier.
    """
    alpha = _check_float("alpha", alpha, minimum=0.0, open_min=True)
    dropout = _check_float("dropout", dropout, minimum=0.0, maximum=1.0, open_max=True)

    inputs, x = _input_and_normalization(input_shape, normalization)
    x = layers.Conv2D(_make_divisible(32 * alpha, 8), 3, strides=1, padding="same",
                      use_bias=False, name="stem_conv")(x)  # ImageNet: stride 2
    x = _mbv2_bn("stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu6")(x)
    for stage, (expansion, filters, blocks, stride) in enumerate(MOBILENET_V2_STAGES, start=1):
        for block in range(1, blocks + 1):
            x = inverted_residual_block(x, expansion, filters, stride if block == 1 else 1,
                                        alpha, name=f"stage{stage}_block{block}")
    head = _make_divisible(1280 * alpha, 8) if alpha > 1.0 else 1280
    x = layers.Conv2D(head, 1, use_bias=False, name="head_conv")(x)
    x = _mbv2_bn("head_bn")(x)
    x = layers.ReLU(6.0, name="head_relu6")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    return keras.Model(inputs, classifier(x, num_classes), name=f"mobilenet_v2_{alpha:.2f}")


# --- CLI: print a model's summary or its counts as JSON -------------------------------------

def _flag(option):
    return "--" + option.replace("_", "-")


def _cli_options():
    """Every builder option (except normalization) as a typed flag, from the signatures."""
    flags = {}
    for arch in available():
        for option, default in options_of(arch).items():
            if option != "normalization":
                flags.setdefault(option, default)
    return flags


def _list_of(cast):
    def parse(text):
        try:
            return tuple(cast(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise ValueError(f"not a comma-separated list: {text!r}") from None
    parse.__name__ = f"list of {cast.__name__}"
    return parse


def _shape(text):
    return tuple(int(v) for v in text.split(","))


_shape.__name__ = "H,W,C"  # argparse names the type in its one-line error


def main(argv=None):
    parser = ArgumentParser(prog="python -m tfcnn.models",
                            description="Print a tfcnn model's summary (or its counts as JSON).")
    parser.add_argument("arch", nargs="?", help=f"one of: {', '.join(available())}")
    parser.add_argument("--pretrained", action="store_true",
                        help="list the trained models shipped in saved_models/ (use them as pretrained:NAME)")
    parser.add_argument("--dataset", choices=sorted(DATASETS),
                        help="size the model for this dataset (no data is loaded)")
    parser.add_argument("--input-shape", type=_shape, metavar="H,W,C", help="image shape (default: --dataset's, else the arch's lab input)")
    parser.add_argument("--num-classes", type=int, metavar="N", help="output classes (default: --dataset's, else the arch's lab classes)")
    parser.add_argument("--mean", type=_list_of(float), metavar="R,G,B",
                        help="per-channel mean on the 0-255 scale (with --std)")
    parser.add_argument("--std", type=_list_of(float), metavar="R,G,B", help="per-channel std on the 0-255 scale (with --mean; default: no normalisation layer)")
    flags = _cli_options()
    for option, default in flags.items():
        kind = _list_of(type(default[0])) if isinstance(default, tuple) else type(default)
        users = [a for a in available() if option in options_of(a)]
        parser.add_argument(_flag(option), dest=option, type=kind, default=None,
                            help=f"option of {', '.join(users)} (default {default})")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args(argv)
    if args.pretrained:
        print("\n".join(pretrained.listing()))
        return 0
    if args.arch is None:
        parser.error("the following arguments are required: arch (or --pretrained)")

    accepted = options_of(args.arch)  # raises TfcnnError for an unknown arch
    options = {k: getattr(args, k) for k in flags if getattr(args, k) is not None}
    wrong = [_flag(k) for k in options if k not in accepted]
    if wrong:
        takes = [_flag(k) for k in accepted if k != "normalization"] + ["--mean/--std"]
        raise TfcnnError(f"{', '.join(wrong)} does not apply to {args.arch}; "
                         f"it takes: {', '.join(takes)}")
    if (args.mean is None) != (args.std is None):
        raise TfcnnError("--mean and --std go together (per-channel, 0-255 scale)")
    if args.mean is not None:
        options["normalization"] = (list(args.mean), list(args.std))
    if args.dataset and (args.input_shape or args.num_classes):
        raise TfcnnError("give either --dataset or --input-shape/--num-classes, not both")
    shape, classes = DATASETS[args.dataset] if args.dataset else NATURAL_INPUT.get(
        args.arch, DEFAULT_INPUT)
    shape = args.input_shape or shape
    classes = classes if args.num_classes is None else args.num_classes

    model = build(args.arch, shape, classes, **options)
    if not args.json:
        model.summary()
        return 0
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    total = model.count_params()
    resolved = {**accepted, **options}
    print(json.dumps({
        "arch": args.arch, "model_name": model.name, "input_shape": list(shape),
        "num_classes": classes, "total_params": total, "trainable_params": trainable,
        "non_trainable_params": total - trainable, "layers": len(model.layers),
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in resolved.items()},
    }))
    return 0


if __name__ == "__main__":
    run_cli(main)
