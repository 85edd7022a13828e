"""tfcnn.models: exact parameter counts from the labs, head structure, save/load, CLI."""
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcnn import models
from tfcnn.errors import TfcnnError, run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR_STATS = ([125.3, 123.0, 113.9], [63.0, 62.1, 66.7])
MNIST_STATS = ([33.3], [78.6])

# (arch, input_shape, num_classes, options) -> total parameters, from the labs' summaries
# (mobilenet_v2: Keras applications' MobileNetV2 with a 10-class top, see below).
EXACT_COUNTS = [
    ("two_conv", (28, 28, 1), 10, {}, 125_499_810),
    ("pooled", (28, 28, 1), 10, {}, 15_735_170),
    ("pooled", (28, 28, 1), 10, {"pool": "avg"}, 15_735_170),
    ("lenet5", (28, 28, 1), 10, {}, 61_706),
    ("lenet5", (28, 28, 1), 10, {"activation": "relu", "pool": "max"}, 61_706),
    # 156 + 1176*120+120 + 120*84+84 + 850
    ("lenet5", (28, 28, 1), 10, {"conv_layers": 1}, 152_410),
    # 61,706 + C5 (16*25*120+120) + a 120->120 dense instead of 400->120
    ("lenet5", (28, 28, 1), 10, {"conv_layers": 3}, 76_226),
    ("cifar_cnn", (32, 32, 3), 3, {}, 21_699),
    ("resnet", (32, 32, 3), 10, {"stack_n": 3}, 274_442),
    ("resnet", (32, 32, 3), 10, {"stack_n": 5}, 470_218),
    ("resnet", (32, 32, 3), 10, {"stack_n": 18}, 1_742_762),
    ("mobilenet_v2", (32, 32, 3), 10, {"alpha": 0.5}, 719_034),
    ("mobilenet_v2", (32, 32, 3), 10, {"alpha": 1.0}, 2_270_794),
]

# Small but complete configurations for forward passes and save/load round trips.
SMALL = [
    ("two_conv", (28, 28, 1), 10, {"width": 16}),
    ("pooled", (28, 28, 1), 10, {"width": 16, "pool": "avg"}),
    ("lenet5", (28, 28, 1), 10, {"normalization": MNIST_STATS}),
    ("lenet5", (32, 32, 3), 7, {"conv_layers": 3, "activation": "elu", "dense_units": (32,)}),
    ("cifar_cnn", (32, 32, 3), 3, {}),
    ("resnet", (32, 32, 3), 10, {"stack_n": 1, "normalization": CIFAR_STATS}),
    ("mobilenet_v2", (32, 32, 3), 5, {"alpha": 0.35, "dropout": 0.2}),
]


def _ids(cases):
    return [f"{c[0]}-{'-'.join(f'{k}={v}' for k, v in c[3].items() if k != 'normalization')}"
            for c in cases]


def _images(shape, n=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape)).astype("float32")


@pytest.fixture(autouse=True)
def _fresh_keras():
    yield
    keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session()


def test_registry_lists_every_builder():
    assert models.available() == ["airbench94", "cifar_cnn", "lenet5", "mobilenet_v2", "pooled", "resnet",
                                  "two_conv"]
    assert all(models.MODELS[name].__name__ == name for name in models.available())


@pytest.mark.parametrize("arch,shape,classes,options,count", EXACT_COUNTS,
                         ids=_ids(EXACT_COUNTS))
def test_exact_parameter_counts_and_normalization_adds_none(arch, shape, classes, options, count):
    model = models.build(arch, shape, classes, **options)
    assert model.count_params() == count
    del model
    keras.backend.clear_session()
    stats = CIFAR_STATS if shape[-1] == 3 else MNIST_STATS
    model = models.build(arch, shape, classes, normalization=stats, **options)
    assert model.layers[1].name == "normalize"
    assert model.count_params() == count


@pytest.mark.parametrize("arch,shape,classes,options", SMALL, ids=_ids(SMALL))
def test_forward_pass_and_keras_round_trip(arch, shape, classes, options, tmp_path):
    model = models.build(arch, shape, classes, **options)
    assert model.name.startswith(arch)
    assert model.output.dtype == "float32"
    x = _images(shape)
    probs = keras.ops.convert_to_numpy(model(x, training=False))
    assert probs.shape == (2, classes)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)

    path = tmp_path / f"{arch}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    assert loaded.count_params() == model.count_params()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x, training=False)), probs)


@pytest.mark.parametrize("arch", ["two_conv", "pooled", "lenet5", "cifar_cnn", "resnet",
                                  "mobilenet_v2"])
def test_head_is_logits_then_float32_softmax(arch):
    shape, classes = models.NATURAL_INPUT.get(arch, models.DEFAULT_INPUT)
    options = {"two_conv": {"width": 8}, "pooled": {"width": 8}, "resnet": {"stack_n": 1},
               "mobilenet_v2": {"alpha": 0.35}}.get(arch, {})
    model = models.build(arch, shape, classes, **options)
    predictions, probs = model.get_layer("predictions"), model.get_layer("probs")
    assert model.layers[-1] is probs and model.layers[-2] is predictions
    assert predictions.activation is keras.activations.linear
    assert predictions.units == classes
    assert probs.dtype_policy.compute_dtype == "float32"
    # Transfer learning cuts here: the features that feed the classifier.
    features = keras.Model(model.input, predictions.input)
    assert len(features.output.shape) == 2


def test_resnet_layer_names_read_like_the_paper():
    model = models.build("resnet", (32, 32, 3), 10, stack_n=2)
    assert model.name == "resnet14"
    names = {layer.name for layer in model.layers}
    for name in ["stem_conv", "stage1_block1_preact_bn", "stage1_block1_preact_relu",
                 "stage1_block1_conv1", "stage1_block1_conv1_bn", "stage1_block1_conv2",
                 "stage1_block1_add", "stage2_block1_shortcut_conv", "stage2_block1_add",
                 "stage3_block1_shortcut_conv", "stage3_block2_add", "final_bn",
                 "final_relu", "avg_pool", "predictions", "probs"]:
        assert name in names, name
    shortcuts = sorted(n for n in names if n.endswith("shortcut_conv"))
    assert shortcuts == ["stage2_block1_shortcut_conv", "stage3_block1_shortcut_conv"]
    assert model.get_layer("stage3_block2_add").output.shape == (None, 8, 8, 64)
    # The projection sees the pre-activated input (He et al. 2016), as in the Torch reference.
    assert model.get_layer("stage2_block1_shortcut_conv").input is \
        model.get_layer("stage2_block1_preact_relu").output
    conv = model.get_layer("stage2_block1_conv1")
    assert conv.strides == (2, 2) and conv.use_bias
    assert isinstance(conv.kernel_initializer, keras.initializers.HeNormal)
    assert conv.kernel_regularizer.l2 == pytest.approx(1e-4)
    bn = model.get_layer("final_bn")
    assert (bn.momentum, bn.epsilon) == (0.9, 1e-5)
    # L2 on every conv kernel (stem + 12 block convs + 2 projections) and the dense kernel.
    assert len(model.losses) == 1 + 12 + 2 + 1


def test_resnet_elu_changes_activations_not_parameters():
    relu = models.build("resnet", (32, 32, 3), 10, stack_n=1)
    elu = models.build("resnet", (32, 32, 3), 10, stack_n=1, activation="elu")
    assert elu.name == "resnet8_elu"
    assert elu.count_params() == relu.count_params() == 78_666

    def acts(model):
        return {layer.activation.__name__ for layer in model.layers
                if isinstance(layer, keras.layers.Activation) and layer.name != "probs"}
    assert acts(relu) == {"relu"} and acts(elu) == {"elu"}
    assert "final_elu" in [layer.name for layer in elu.layers]
    no_decay = models.build("resnet", (32, 32, 3), 10, stack_n=1, weight_decay=0)
    assert no_decay.losses == [] and no_decay.count_params() == 78_666


def test_mobilenet_v2_matches_keras_applications_weights():
    for alpha in (0.5, 1.0):
        ours = models.build("mobilenet_v2", (32, 32, 3), 10, alpha=alpha)
        ref = keras.applications.MobileNetV2(weights=None, include_top=True, classes=10,
                                             input_shape=(32, 32, 3), alpha=alpha)
        # Strides never change weight shapes, so our 32x32 strides still match the stock net.
        assert [tuple(w.shape) for w in ours.weights] == [tuple(w.shape) for w in ref.weights]
        assert ours.count_params() == ref.count_params()
    assert ours.get_layer("head_relu6").output.shape == (None, 4, 4, 1280)
    assert ours.get_layer("stage7_block1_project").output.shape[-1] == 320
    assert "stage2_block2_add" in [layer.name for layer in ours.layers]
    no_dropout = [layer.name for layer in ours.layers]
    assert "dropout" not in no_dropout
    with_dropout = models.build("mobilenet_v2", (32, 32, 3), 10, alpha=1.0, dropout=0.3)
    assert with_dropout.get_layer("predictions").input is \
        with_dropout.get_layer("dropout").output


def test_normalization_is_constant_and_applied():
    mean, std = CIFAR_STATS
    model = models.build("cifar_cnn", (32, 32, 3), 3, normalization=(mean, std))
    norm = model.get_layer("normalize")
    assert norm.count_params() == 0 and norm.weights == []
    assert "rescale" not in [layer.name for layer in model.layers]
    assert model.get_layer("conv1").input is norm.output
    x = _images((32, 32, 3))
    out = keras.ops.convert_to_numpy(norm(x))
    np.testing.assert_allclose(out, (x - np.array(mean)) / np.array(std), rtol=1e-5, atol=1e-5)

    fallback = models.build("cifar_cnn", (32, 32, 3), 3)
    assert fallback.layers[1].name == "rescale"
    assert fallback.layers[1].scale == pytest.approx(1 / 255)
    plain = models.build("lenet5", (28, 28, 1), 10)
    assert plain.layers[1].name == "conv1"  # only the lab's cifar_cnn rescales by default


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_builds_under_mixed_precision(policy):
    keras.mixed_precision.set_global_policy(policy)
    compute = policy.split("_")[1]
    for arch, options in [("resnet", {"stack_n": 1, "normalization": CIFAR_STATS}),
                          ("mobilenet_v2", {"alpha": 0.35}), ("cifar_cnn", {})]:
        model = models.build(arch, (32, 32, 3), 4, **options)
        assert model.get_layer("predictions").compute_dtype == compute
        assert model.get_layer("predictions").kernel.dtype == "float32"
        probs = keras.ops.convert_to_numpy(model(_images((32, 32, 3)), training=False))
        assert probs.dtype == np.float32
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-3)


def test_builds_under_a_distribution_strategy():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = models.build("resnet", (32, 32, 3), 10, stack_n=1)
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    assert strategy.extended.variable_created_in_scope(model.get_layer("predictions").kernel.value)
    loss = model.train_on_batch(_images((32, 32, 3), n=4), np.array([0, 1, 2, 3]))
    assert np.isfinite(loss)


@pytest.mark.parametrize("arch,options,message", [
    ("nosuch", {}, "unknown architecture 'nosuch'; available: airbench94, cifar_cnn"),
    ("resnet", {"width": 10}, "resnet has no option 'width'"),
    ("resnet", {"stack_n": 0}, "stack_n must be an integer >= 1"),
    ("resnet", {"stack_n": 2.5}, "stack_n must be an integer"),
    ("resnet", {"activation": "sigmoid"}, "activation must be one of relu, elu"),
    ("resnet", {"weight_decay": -1}, "weight_decay must be a number >= 0"),
    ("lenet5", {"activation": "swish"}, "activation must be one of tanh, relu, elu"),
    ("lenet5", {"pool": "min"}, "pool must be one of avg, max"),
    ("lenet5", {"conv_layers": 4}, "conv_layers must be an integer between 1 and 3"),
    ("lenet5", {"dense_units": (120, 0)}, "dense_units must be an integer >= 1"),
    ("two_conv", {"width": 0}, "width must be an integer >= 1"),
    ("pooled", {"pool": "sum"}, "pool must be one of max, avg"),
    ("mobilenet_v2", {"alpha": 0}, "alpha must be a number > 0"),
    ("mobilenet_v2", {"dropout": 1.0}, "dropout must be a number >= 0.0 and < 1.0"),
    ("cifar_cnn", {"normalization": ([1, 2], [1, 2])}, "need 3 values each"),
    ("cifar_cnn", {"normalization": ([1, 2, 3], [1, 0, 3])}, "std must be positive"),
    ("cifar_cnn", {"normalization": "imagenet"}, "normalization must be (mean, std)"),
])
def test_bad_options_raise_tfcnn_error(arch, options, message):
    with pytest.raises(TfcnnError, match=re.escape(message)):
        models.build(arch, (32, 32, 3), 10, **options)


@pytest.mark.parametrize("arch,shape,classes,message", [
    ("lenet5", (8, 8, 1), 10, "lenet5 needs inputs of at least 12x12"),
    ("lenet5", (28, 28), 10, "input_shape must be (height, width, channels)"),
    ("pooled", None, 10, "input_shape must be (height, width, channels)"),
    ("lenet5", (32, 32, 1), 10.0, "num_classes must be an integer >= 1"),
    ("resnet", (32, 32, 3), 0, "num_classes must be an integer >= 1"),
    ("cifar_cnn", (8, 8, 3), 3, "cifar_cnn needs inputs of at least 13x13"),
])
def test_bad_shapes_raise_tfcnn_error(arch, shape, classes, message):
    with pytest.raises(TfcnnError, match=re.escape(message)):
        models.build(arch, shape, classes)


def test_register_adds_a_builder_to_the_one_door():
    @models.register
    def tiny(input_shape, num_classes, *, normalization=None, units=4):
        inputs, x = models._input_and_normalization(input_shape, normalization)
        x = keras.layers.Flatten()(x)
        return keras.Model(inputs, models.classifier(x, num_classes), name="tiny")
    try:
        assert "tiny" in models.available()
        assert models.build("tiny", (2, 2, 1), 3).count_params() == 4 * 3 + 3
    finally:
        del models.MODELS["tiny"]


def test_cli_json_in_process(capsys):
    assert models.main(["lenet5", "--conv-layers", "3", "--dense-units", "84",
                        "--dataset", "cifar10", "--mean", "1,2,3", "--std", "4,5,6",
                        "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["input_shape"] == [32, 32, 3] and report["num_classes"] == 10
    assert report["options"] == {"normalization": [[1, 2, 3], [4, 5, 6]], "activation": "tanh",
                                 "pool": "avg", "conv_layers": 3, "dense_units": [84]}
    assert report["total_params"] == report["trainable_params"] == 92_246

    assert models.main(["cifar_cnn"]) == 0  # the lab's 3-class default, as a summary
    out = capsys.readouterr().out
    assert "predictions" in out and "21,699" in out


@pytest.mark.parametrize("argv,message", [
    (["resnet", "--stack-n", "0"], "error: stack_n must be an integer >= 1, got 0"),
    (["resnet", "--width", "3"], "error: --width does not apply to resnet"),
    (["resnet", "--mean", "1,2,3"], "error: --mean and --std go together"),
    (["lenet5", "--dataset", "mnist", "--num-classes", "3"], "error: give either --dataset"),
    (["resnet", "--stack-n", "x"], "invalid int value: 'x'"),
    (["resnet", "--dataset", "imagenet"], "invalid choice: 'imagenet'"),
    (["lenet5", "--input-shape", "28x28"], "invalid H,W,C value: '28x28'"),
    (["lenet5", "--input-shape", "8,8,1"], "error: lenet5 needs inputs of at least 12x12"),
])
def test_cli_errors_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(models.main, argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and message in captured.err


def _start_cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen([sys.executable, "-m", "tfcnn.models", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _without_tf_startup_logs(stderr):
    # TF 2.21 writes absl's pre-initialization lines to stderr whatever TF_CPP_MIN_LOG_LEVEL.
    return [line for line in stderr.splitlines()
            if line.strip() and not re.match(r"^([IWEF]\d{4} |WARNING: All log messages before)",
                                             line)]


def test_cli_subprocess_json_and_unknown_arch():
    # Both at once: most of each run is importing TensorFlow.
    json_run = _start_cli("resnet", "--stack-n", "3", "--activation", "elu", "--json")
    unknown_run = _start_cli("nosuch")
    out, err = json_run.communicate(timeout=120)
    assert json_run.returncode == 0, err
    report = json.loads(out)  # stdout is exactly one JSON object
    assert report["arch"] == "resnet" and report["model_name"] == "resnet20_elu"
    assert report["input_shape"] == [32, 32, 3] and report["num_classes"] == 10
    assert report["total_params"] == 274_442
    assert report["trainable_params"] + report["non_trainable_params"] == 274_442
    assert report["options"] == {"normalization": None, "stack_n": 3, "activation": "elu",
                                 "weight_decay": 1e-4}
    assert report["layers"] == 72

    out, err = unknown_run.communicate(timeout=120)
    assert unknown_run.returncode == 2 and out == ""
    assert _without_tf_startup_logs(err) == [
        "error: unknown architecture 'nosuch'; available: airbench94, cifar_cnn, lenet5, mobilenet_v2, "
        "pooled, resnet, two_conv"]


def test_mobilenet_v2_batchnorm_statistics_follow_short_runs():
    """Momentum 0.9: after 50 training-mode steps the moving mean sits at the batch mean, not at 0."""
    model = models.build("mobilenet_v2", (32, 32, 3), 10)
    bn = model.get_layer("stem_bn")
    assert bn.momentum == 0.9
    x = np.full((4, 32, 32, 3), 100.0, "float32")
    for _ in range(50):
        model(x, training=True)
    batch_mean = keras.ops.convert_to_numpy(model.get_layer("stem_conv")(x)).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean), batch_mean, rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_fused_batch_norm_matches_keras_batch_norm(policy):
    """The fused layer is Keras' BatchNormalization computed by one kernel: same outputs, gradients and
    moving statistics (biased variance, momentum update) in training, and same outputs in inference."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        x = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, (8, 5, 5, 6)), tf.float32)
        layers_ = []
        for cls in (keras.layers.BatchNormalization, models.FusedBatchNormalization):
            layer = cls(momentum=0.9, epsilon=1e-3)
            layer.build(x.shape)
            layer.gamma.assign(np.linspace(0.5, 1.5, 6))
            layer.beta.assign(np.linspace(-1.0, 1.0, 6))
            layers_.append(layer)
        results = []
        for layer in layers_:
            inputs = tf.cast(x, layer.compute_dtype)
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                y = layer(inputs, training=True)
                loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.range(6, dtype=tf.float32))
            grads = tape.gradient(loss, [inputs, layer.gamma, layer.beta])
            results.append([y, *grads, layer.moving_mean, layer.moving_variance, layer(inputs, training=False)])
        tol = 1e-4 if policy == "float32" else 5e-2
        names = ["train output", "input grad", "gamma grad", "beta grad", "moving mean", "moving var", "inference"]
        for name, ref, fused in zip(names, *results):
            np.testing.assert_allclose(np.asarray(tf.cast(fused, tf.float32)), np.asarray(tf.cast(ref, tf.float32)),
                                       rtol=tol, atol=tol, err_msg=name)
        # The moving statistics did move (so the comparison above is not of two untouched initial values).
        assert np.abs(np.asarray(layers_[1].moving_mean)).min() > 0.1
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_resnet_and_mobilenet_use_the_fused_batch_norm():
    for arch, opts in (("resnet", {"stack_n": 1}), ("mobilenet_v2", {"alpha": 0.35})):
        model = models.build(arch, (32, 32, 3), 10, **opts)
        norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
        assert norms and all(isinstance(norm, models.FusedBatchNormalization) for norm in norms), arch
