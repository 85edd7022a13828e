"""The CIFAR-10 speedrun: airbench94's network and the recipe pieces any arch can use."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def test_airbench94_has_the_published_nets_weight_count():
    result = subprocess.run([sys.executable, "-m", "tfcnn.models", "airbench94", "--json"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    counts = json.loads(result.stdout)
    # PyTorch's parameters: every conv and linear weight, the whitening bias and the BatchNorm biases
    # (its BatchNorm weights are frozen at 1; Keras' scale=False drops them). Keras adds the moving statistics.
    moving_statistics = 2 * 2 * (64 + 256 + 256)
    assert counts["total_params"] - moving_statistics == 1_971_640
    assert counts["trainable_params"] == 1_971_640 - 2 * 2 * 3 * 24  # the whitening kernel is frozen


def test_gelu_trains_through_xla_kernels_with_the_exact_value_and_gradient():
    import tensorflow as tf

    from tfcnn import kernels

    x = tf.constant(np.linspace(-6, 6, 1001, dtype="float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = kernels.gelu(x)
    grad = tape.gradient(y, x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        reference = tf.nn.gelu(x, approximate=False)
    np.testing.assert_allclose(y, reference, atol=1e-6)
    np.testing.assert_allclose(grad, tape.gradient(reference, x), atol=1e-5)
    assert not np.allclose(grad, tf.nn.sigmoid(1.702 * x), atol=1e-3)  # not a cheaper approximation


def test_whitening_init_gives_the_first_layer_near_identity_covariance_on_training_patches(shared_data):
    import tensorflow as tf

    from tfcnn import data, initializers, models, pipelines

    ds = data.load("cifar10", shared_data)
    pipes = pipelines.make_pipelines(ds, batch_size=512, val_fraction=0)
    model = models.build("airbench94", (32, 32, 3), 10, normalization=(pipes.mean, pipes.std))
    layer = model.get_layer("whiten")
    before = np.array(layer.kernel)
    images = pipes.x_train[:5000]
    normalized = np.asarray(model.get_layer("normalize")(images.astype("float32")))

    def covariance(kernel):  # of the layer's outputs (before its bias) on every 2x2 patch of the images
        out = tf.nn.conv2d(normalized, kernel, 1, "VALID").numpy().reshape(-1, kernel.shape[-1])
        return np.cov(out[:, :12], rowvar=False), out

    # With airbench's eps (5e-4) the faintest directions stay below unit variance (lambda / (lambda + eps)): the
    # whitening is exact up to that regularisation, which a tiny eps removes.
    initializers.init_whitening(model, images, eps=1e-9)
    white, out = covariance(np.array(layer.kernel))
    np.testing.assert_allclose(white, np.eye(12), atol=0.02)
    np.testing.assert_allclose(out[:, 12:], -out[:, :12], atol=1e-4)  # the other 12 filters are the negatives
    initializers.init_whitening(model, images)
    regularised, _ = covariance(np.array(layer.kernel))
    assert np.abs(regularised - np.diag(np.diag(regularised))).max() < 0.02 and np.diag(regularised)[:6].min() > 0.95
    assert not np.allclose(before, np.array(layer.kernel))
    raw, _ = covariance(before)  # the random init is far from white: the test can fail
    assert np.abs(raw - np.eye(12)).max() > 0.3


def test_dirac_init_makes_the_first_filters_identities():
    from tfcnn import initializers, models

    model = models.build("airbench94", (32, 32, 3), 10)
    changed = initializers.dirac_init(model)
    assert changed == ["group1_conv1", "group1_conv2", "group2_conv1", "group2_conv2", "group3_conv1", "group3_conv2"]
    kernel = np.array(model.get_layer("group2_conv1").kernel)  # 64 -> 256
    identity = np.zeros((3, 3, 64, 64))
    identity[1, 1, np.arange(64), np.arange(64)] = 1
    np.testing.assert_array_equal(kernel[..., :64], identity)
    assert np.abs(kernel[..., 64:]).max() > 0  # the other filters keep their random init


def test_alternating_flip_flips_each_image_on_every_other_epoch():
    from tfcnn import data, pipelines

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(40, 8, 8, 3)).astype("uint8")
    x[:, 0, 0, 0] = np.arange(40)  # an id in each image's top-left pixel (top-right once mirrored)
    ds = data.Dataset("toy", [str(i) for i in range(4)], x, np.arange(40) % 4, x[:4], np.arange(4),
                      augmentation="crop_flip")
    pipes = pipelines.make_pipelines(ds, batch_size=8, val_fraction=0, flip="alternate", translate=0, seed=3)

    def mirrored_per_image(epoch):
        images = np.concatenate([b[0].numpy()
                                 for b in pipelines.train_epochs(pipes, start_epoch=epoch, epochs=epoch + 1)])
        flags = {}
        for image in images.astype("uint8"):
            if image[0, 0, 0] < 40 and np.array_equal(image, x[image[0, 0, 0]]):
                flags[int(image[0, 0, 0])] = False
            else:
                original = int(image[0, -1, 0])
                assert np.array_equal(image, x[original][:, ::-1])
                flags[original] = True
        assert sorted(flags) == list(range(40))
        return np.array([flags[i] for i in range(40)])

    epochs = [mirrored_per_image(e) for e in range(4)]
    assert 10 < epochs[0].sum() < 30  # a random part of the images starts mirrored
    np.testing.assert_array_equal(epochs[1], ~epochs[0])
    np.testing.assert_array_equal(epochs[2], epochs[0])
    np.testing.assert_array_equal(epochs[3], ~epochs[0])
    random = pipelines.make_pipelines(ds, batch_size=8, val_fraction=0, flip="random", translate=0, seed=3)
    assert random.train is not None  # the default keeps a coin per image and epoch


def test_reflect_translation_mirrors_the_border():
    import tensorflow as tf

    from tfcnn import pipelines

    images = 1 + np.arange(2 * 6 * 6 * 1, dtype="float32").reshape(2, 6, 6, 1)
    augment = pipelines.augment_fn("shift", (6, 6, 1), translate=2, pad_mode="reflect")
    out = augment(tf.constant(images), tf.constant([1, 2], tf.int64)).numpy()
    padded = np.pad(images, [(0, 0), (2, 2), (2, 2), (0, 0)], mode="reflect")
    for image, source in zip(out, padded):
        crops = [source[dy:dy + 6, dx:dx + 6] for dy in range(5) for dx in range(5)]
        assert any(np.array_equal(image, crop) for crop in crops)
    assert (out > 0).all()  # no zero fill: every pixel is >= 1
    zeros = pipelines.augment_fn("shift", (6, 6, 1), translate=2)(tf.constant(images), tf.constant([1, 2], tf.int64))
    assert (zeros.numpy() == 0).any()  # zero padding does show: the test can fail


def test_lookahead_is_exact_on_a_toy_model():
    import keras

    from tfcnn.optim import RecipeSGD

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    x = np.random.default_rng(1).normal(size=(16, 3)).astype("float32")
    y = np.random.default_rng(2).normal(size=(16, 2)).astype("float32")
    total, k, lr, momentum = 7, 2, 0.1, 0.5
    optimizer = RecipeSGD(lr, momentum=momentum, nesterov=True, lookahead_every=k, total_steps=total)
    model.compile(optimizer=optimizer, loss="mse")
    w = [v.copy() for v in model.get_weights()]
    average = [v.copy() for v in w]
    buffers = [np.zeros_like(v) for v in w]
    for t in range(1, total + 1):
        model.train_on_batch(x, y)
        # The same step in numpy: Nesterov SGD on the MSE gradient, then airbench's lookahead.
        err = x @ w[0] + w[1] - y
        grads = [2 * x.T @ err / err.size, 2 * err.sum(0) / err.size]
        for i, g in enumerate(grads):
            buffers[i] = momentum * buffers[i] - lr * g
            w[i] = w[i] + momentum * buffers[i] - lr * g
        if t % k == 0 or t == total:
            decay = 1.0 if t == total else 0.95 ** 5 * (t / total) ** 3
            average = [a * decay + v * (1 - decay) for a, v in zip(average, w)]
            w = [a.copy() for a in average]
        for got, want in zip(model.get_weights(), w):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_muon_step_is_airbench94_muons_on_a_conv_kernel():
    """Two Muon steps on a 3x3 conv kernel against airbench94_muon.py's Muon written out in numpy, in PyTorch's
    (out, in, kh, kw) layout: Nesterov buffer, weight renormalised to sqrt(out), 3 Newton-Schulz steps."""
    import keras

    from tfcnn.optim import RecipeSGD

    def newton_schulz(g, steps=3, eps=1e-7):
        x = g / (np.linalg.norm(g) + eps)
        tall = x.shape[0] > x.shape[1]
        x = x.T if tall else x
        for _ in range(steps):
            gram = x @ x.T
            x = 3.4445 * x + (-4.7750 * gram + 2.0315 * gram @ gram) @ x
        return x.T if tall else x

    rng = np.random.default_rng(0)
    kernel = keras.Variable(rng.normal(size=(3, 3, 4, 6)).astype("float32"))
    lr, momentum = 0.24, 0.6
    optimizer = RecipeSGD(0.1, momentum=momentum, nesterov=True, muon_lr=lr, muon_momentum=momentum)
    weight = kernel.numpy().transpose(3, 2, 0, 1).astype("float64")  # PyTorch's layout
    buffer = np.zeros_like(weight)
    for _ in range(2):
        grad = rng.normal(size=(3, 3, 4, 6)).astype("float32")
        optimizer.apply_gradients([(grad, kernel)])
        g = grad.transpose(3, 2, 0, 1).astype("float64")
        buffer = momentum * buffer + g
        g = g + momentum * buffer
        weight = weight * (len(weight) ** 0.5 / np.linalg.norm(weight))
        weight = weight - lr * newton_schulz(g.reshape(len(g), -1)).reshape(g.shape)
        np.testing.assert_allclose(kernel.numpy(), weight.transpose(2, 3, 1, 0), rtol=1e-4, atol=1e-5)


def test_bn_bias_rate_and_a_bias_that_stops_training():
    import keras

    from tfcnn.optim import RecipeSGD

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, name="d")])
    rules = {model.get_layer("d").bias.path: [4.0, 2]}
    model.compile(optimizer=RecipeSGD(0.1, rules=rules, coupled_decay=0.5), loss="mse")
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 1), "float32")
    model.set_weights([np.zeros((3, 1), "float32"), np.ones(1, "float32")])
    biases = []
    for _ in range(4):
        kernel, bias = model.get_weights()
        model.train_on_batch(x, y)
        biases.append(model.get_weights()[1][0])
    # Step 1: error = bias = 1, gradient 2; 4x the rate plus coupled decay 0.5 x 1: 1 - 0.1 (4 x 2 + 0.5) = 0.15.
    assert biases[0] == pytest.approx(0.15, abs=1e-6)
    assert biases[2] == biases[1] == biases[3]  # trained for 2 steps only


def test_flip_translate_tta_weighs_six_views_as_airbench():
    import keras

    from tfcnn.evaluate import predict_proba, tta_views

    rng = np.random.default_rng(0)
    model = keras.Sequential([keras.Input((5, 6, 3)), keras.layers.Flatten(), keras.layers.Dense(4),
                              keras.layers.Softmax()])
    model.set_weights([0.01 * rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    images = rng.integers(0, 256, size=(3, 5, 6, 3)).astype("float32")
    logits_model = keras.Sequential(model.layers[:-1])

    def logits(view):
        return logits_model.predict(np.ascontiguousarray(view), verbose=0).astype("float64")

    padded = np.pad(images, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="reflect")
    up_left, down_right = padded[:, :5, :6], padded[:, 2:7, 2:8]
    mirror = lambda v: v[:, :, ::-1]  # noqa: E731
    # airbench's infer_mirror_translate: 0.5 * mirror(x) + 0.5 * mean(mirror(shift_a), mirror(shift_b)).
    expected = 0.5 * (0.5 * logits(images) + 0.5 * logits(mirror(images))) + 0.5 * np.mean(
        [0.5 * logits(s) + 0.5 * logits(mirror(s)) for s in (up_left, down_right)], axis=0)
    expected = np.exp(expected - expected.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(predict_proba(model, images, tta="flip-translate"), expected, rtol=1e-5)
    assert [w for w, _ in tta_views(images, "flip-translate")] == [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]
    assert not np.allclose(predict_proba(model, images), expected, atol=1e-4)  # the views differ: can fail


def test_the_speedrun_config_runs_an_epoch_and_reports_single_view_tta_and_time(tmp_path, shared_data):
    result = subprocess.run(
        [sys.executable, "-m", "tfcnn.train", "--config", "configs/cifar10_speedrun.yaml", "--epochs", "1",
         "--warmup-epochs", "0.5", "--whiten-bias-epochs", "1", "--limit-train", "2048", "--limit-test", "500",
         "--data-dir", str(shared_data), "--runs-dir", str(tmp_path / "runs"),
         "--saved-models-dir", str(tmp_path / "saved"), "--name", "speed"],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("speed: single-view ") and "TTA" in last and "6 views" in last and "CPU" in last
    metrics = json.loads((tmp_path / "runs" / "speed" / "metrics.json").read_text())
    assert metrics["test"]["tta"]["views"] == 6 and 0.1 < metrics["test"]["tta"]["accuracy"] <= 1
    assert metrics["time_to_tta_s"] > metrics["train_time_s"] > 0
    assert metrics["params"] == 1_971_640 + 2 * 2 * (64 + 256 + 256)


def test_freeze_at_stops_a_layer_from_its_epoch_on():
    import keras

    from tfcnn.callbacks import FreezeAt

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="first"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
    y = np.random.default_rng(1).normal(size=(32, 1)).astype("float32")
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: seen.append([np.array(w) for w in model.get_layer("first").weights]))
    start = [np.array(w) for w in model.get_layer("first").weights]
    model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[FreezeAt("first", 1), record])
    assert not np.allclose(start[0], seen[0][0])  # epoch 0 trained it
    initial_trained = seen[0]
    for later in seen[1:]:
        for a, b in zip(initial_trained, later):
            np.testing.assert_array_equal(a, b)  # frozen from epoch 1 (0-based) on
    assert not model.get_layer("first").trainable and model.layers[1].trainable
