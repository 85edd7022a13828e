"""The bench CLI and notebook API on a tiny model (no speed asserts: the figures live in benchmarks/)."""
import hashlib
import importlib.util
import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from tfcnn import bench, bench_inference, hardware, models
from tests.conftest import REPO

LENET5_FORWARD_FLOPS = 2 * (28 * 28 * 6 * 5 * 5 * 1  # conv1, 'same'
                            + 10 * 10 * 16 * 5 * 5 * 6  # conv2 on the 14x14x6 pooled map, 'valid'
                            + 400 * 120 + 120 * 84 + 84 * 10)  # fc1, fc2, predictions


def _tiny(shared_data, *extra):
    return ["--arch", "lenet5", "--dataset", "mnist", "--batch-size", "16", "--steps", "2",
            "--data-dir", str(shared_data), *extra]


def test_cli_json_has_positive_rates_for_every_device(shared_data, capsys):
    assert bench.main(_tiny(shared_data, "--json")) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["run"] for r in report["results"]] == ["tfcnn pipeline", "tfcnn synthetic"]
    assert all(r["images_per_s"] > 0 and r["median_step_images_per_s"] > 0 and r["epoch_time_s"] > 0
               for r in report["results"])
    assert report["devices"] == bench.devices() and any("CPU" in d for d in report["devices"])
    timed = [d["device"] for d in report["per_device"]]
    assert timed and "CPU" in timed[0] and report["per_device"][0]["speedup_vs_cpu"] == 1.0
    assert report["train_size"] == 54000  # MNIST minus the 10% validation split
    assert 0 < report["ratios"]["tfcnn pipeline / tfcnn synthetic"]["window"]
    assert report["forward_flops_per_image"] == LENET5_FORWARD_FLOPS == 833040
    peak = report["matmul_peak_gflops"]["bfloat16" if report["precision"] == "bfloat16" else "float32"]
    for r in report["results"]:
        assert r["gflops"] == pytest.approx(r["images_per_s"] * 3 * LENET5_FORWARD_FLOPS / 1e9, abs=0.06)
        assert r["fraction_of_peak"] == pytest.approx(r["gflops"] / peak, abs=2e-3)
        assert r["gflop_per_cpu_s"] == pytest.approx(3 * LENET5_FORWARD_FLOPS / (r["cpu_ms_per_image"] * 1e6), rel=0.01)
    assert set(report["matmul_peak_gflops"]) == {"float32"} | ({"bfloat16"} if report["cpu"]["native_bf16"] else set())
    assert report["cpu"]["model"] and report["load_avg_before"] is not None


def test_cli_table(shared_data, capsys):
    assert bench.main(_tiny(shared_data, "--sources", "synthetic")) == 0
    out = capsys.readouterr().out
    assert "tfcnn synthetic" in out and "per device" in out
    assert out.startswith("CPU: ") and "native bfloat16: " in out.splitlines()[0]
    assert "matmul peak" in out and "of peak" in out


def test_missing_torch_venv_still_times_tfcnn(shared_data, capsys):
    argv = _tiny(shared_data, "--sources", "synthetic", "--vs-pytorch", "--torch-python", "/nonexistent/python",
                 "--no-peak")
    assert bench.main(argv) == 0
    captured = capsys.readouterr()
    assert "tfcnn synthetic" in captured.out and "no PyTorch interpreter at /nonexistent/python" in captured.out
    assert captured.err.count("no PyTorch interpreter") == 1


def test_forward_flops_counts_conv_depthwise_grouped_and_dense_layers():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 8*8*4 outputs x 3*3*3 MACs = 6912
    x = keras.layers.DepthwiseConv2D(3, strides=2)(x)  # 3*3*4 outputs x 3*3 MACs = 324
    x = keras.layers.Conv2D(2, 1, groups=2)(x)  # 3*3*2 outputs x 1*1*(4/2) MACs = 36
    x = keras.layers.Dense(5)(keras.layers.Flatten()(x))  # 18*5 = 90
    inner = keras.Model(inputs, x)
    outer = keras.Model(inputs, keras.layers.Dense(3)(inner(inputs)))  # nested, then 5*3 = 15
    assert bench.forward_flops(inner) == 2 * (6912 + 324 + 36 + 90)
    assert bench.forward_flops(outer) == 2 * (6912 + 324 + 36 + 90 + 15)


def test_forward_flops_of_resnet32():
    from tfcnn import models

    model = models.build("resnet", (32, 32, 3), 10, stack_n=5)
    macs = (32 * 32 * 16 * 27  # stem conv
            + 10 * 32 * 32 * 16 * 144  # stage 1: 5 blocks x 2 convs
            + 16 * 16 * 32 * (144 + 9 * 288 + 16)  # stage 2: strided conv1, 9 more, 1x1 projection
            + 8 * 8 * 64 * (288 + 9 * 576 + 32)  # stage 3
            + 64 * 10)
    assert bench.forward_flops(model) == 2 * macs == 138_249_472


def test_matmul_peak_is_a_rate():
    best, per_cpu_second = hardware.matmul_peak("float32", size=64, seconds=0.05)
    assert 0 < best < 1e5 and 0 < per_cpu_second < 1e5


def test_time_training_api(shared_data):
    result = bench.time_training("lenet5", "mnist", batch_size=16, steps=2, data_dir=str(shared_data),
                                 source="synthetic", conv_layers=1)
    assert result["images_per_s"] > 0 and result["median_step_images_per_s"] > 0
    assert result["device"] == bench.devices()[0]
    assert result["epoch_time_s"] == pytest.approx(54000 / result["images_per_s"], rel=0.01)


class _Trained(Exception):
    """Stops a run where its first stage would start training."""


@pytest.mark.parametrize("settings", [
    # lenet5: Adam with decoupled weight decay (AdamW); shift augmentation + cutout, class weights, one-hot labels.
    dict(arch="lenet5", dataset="mnist", weight_decay=5e-4, cutout=8, class_weight="balanced", label_smoothing=0.1),
    # resnet: its decay is L2 in the model, none in the optimizer; crop + flip, alternating flip, reflect padding.
    dict(arch="resnet", stack_n=1, dataset="cifar10", cutout=12, flip="alternate", translate=2, pad_mode="reflect",
         lr=0.2, schedule="cosine", warmup_epochs=1),
], ids=["lenet5", "resnet"])
def test_bench_times_what_a_run_trains(tmp_path, shared_data, monkeypatch, settings):
    """The bench's pipeline, model and compile are the trainer's: same batches (augmentation, cutout and class
    weights included), same element spec, same optimizer settings and loss."""
    from tfcnn import config, pipelines, train

    settings = dict(settings, batch_size=32, limit_train=96, limit_test=64, epochs=3, data_dir=str(shared_data))
    seen = {}

    def first_stage(model, run, stage, epochs):
        seen.update(model=model, pipes=run.pipes, steps=run.steps)
        raise _Trained

    monkeypatch.setattr(train, "_fit_stage", first_stage)
    with pytest.raises(_Trained):
        train.train_and_evaluate(config.make_config({**settings, "runs_dir": str(tmp_path / "runs"), "name": "seam",
                                                     "saved_models_dir": str(tmp_path / "saved"), "verbose": 0,
                                                     "tensorboard": False}))
    session = bench.Session(settings.pop("arch"), settings.pop("dataset"), batch_size=settings.pop("batch_size"),
                             data_dir=settings.pop("data_dir"), config_overrides=settings)
    benched = bench.trainer_model(session.config, session.pipes, session.num_classes, session.steps_per_epoch)

    trained = seen["pipes"]
    assert session.pipes.train.element_spec == trained.train.element_spec
    assert len(trained.train.element_spec) == (3 if settings.get("class_weight") else 2)  # sample weights
    assert session.steps_per_epoch == seen["steps"]
    first_batch = next(iter(session.batches("pipeline", session.steps_per_epoch)))
    for a, b in zip(first_batch, next(iter(pipelines.train_epochs(trained, epochs=1))), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # epoch 0's first batch, augmented and weighted
    model = seen["model"]

    def settings_of(optimizer):  # all but its object name, which Keras numbers per process (adam_w, adam_w_1)
        return {k: v for k, v in optimizer.get_config().items() if k != "name"}

    assert settings_of(benched.optimizer) == settings_of(model.optimizer)
    assert type(benched.optimizer) is type(model.optimizer)
    assert benched.loss.get_config() == model.loss.get_config()
    assert benched.steps_per_execution == model.steps_per_execution
    assert benched.count_params() == model.count_params()

    def decay(m):  # ResNet's L2 in its layers
        return [layer.get_config().get("kernel_regularizer") for layer in m.layers]

    assert decay(benched) == decay(model)
    assert any(decay(model)) == (settings.get("stack_n") is not None)


@pytest.mark.parametrize("argv, message", [
    (["--arch", "nope"], "unknown --arch 'nope'"),
    (["--arch", "lenet5", "--steps", "1"], "--steps must be at least 2"),
    (["--arch", "lenet5", "--sources", "disk"], "--sources takes"),
    (["--arch", "resnet", "--vs-pytorch", "--pytorch-variants", "channels_last,eager"], "--pytorch-variants takes"),
    (["--inference"], "--inference needs --model"),
    (["--inference", "--model", "/nonexistent/model"], "not a saved model folder"),
])
def test_bad_arguments_exit_2_with_one_line(argv, message, capsys, shared_data):
    with pytest.raises(SystemExit) as exit_:
        bench.run_cli(bench.main, argv + ["--data-dir", str(shared_data)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_bad_arch_from_a_real_process():
    done = subprocess.run([sys.executable, "-m", "tfcnn.bench", "--arch", "resnet50"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: unknown --arch 'resnet50'; choose one of "
                                   "airbench94, cifar_cnn, lenet5, mobilenet_v2, pooled, resnet, two_conv")


def _tree(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_inference_times_every_export_and_leaves_the_folder_alone(tmp_path, shared_data, capsys):
    """A tiny MNIST-shaped model with Keras, SavedModel and ONNX exports; the TFLite one is made in a
    temporary folder by the export CLI (checked on MNIST test images), not in the model folder."""
    from tfcnn import export
    from tfcnn.train import _set_onednn_bfloat16

    _set_onednn_bfloat16(False)  # the training benchmarks above may have switched on bfloat16 graphs in this process
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(x)))
    meta = {"dataset": "mnist", "class_names": [str(i) for i in range(10)], "input_shape": [28, 28, 1]}
    folder = tmp_path / "tiny"
    export.export_saved_model(model, folder, meta)
    images = np.random.default_rng(0).integers(0, 256, (32, 28, 28, 1)).astype("float32")
    export.export(model, "onnx", folder / "model.onnx", images=images, meta=meta)
    before = _tree(folder)

    argv = ["--inference", "--model", str(folder), "--repeat", "2", "--latency-calls", "5", "--throughput-batch", "8",
            "--data-dir", str(shared_data), "--session-options", "--json"]
    assert bench.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert _tree(folder) == before and not list(folder.rglob("*.tflite"))
    defaults = [r["run"] for r in report["results"] if r["default"]]
    assert defaults == ["keras", "savedmodel", "onnx", "tflite"]
    for r in report["results"]:
        assert 0 < r["latency_ms_p50"] <= r["latency_ms_p99"]
        assert r["throughput_images_per_s"] > 0 and len(r["throughput_runs"]) == 2
        if not r["default"]:
            base = next(d for d in report["results"] if d["default"] and d["kind"] == r["kind"])
            assert r["vs_default"]["throughput"] == pytest.approx(
                r["throughput_images_per_s"] / base["throughput_images_per_s"], abs=2e-3)
    others = {r["run"] for r in report["results"]} - set(defaults)
    assert {"keras predict", "onnx ORT defaults", "onnx intra 1", "onnx no spin", "tflite threads 1",
            "tflite no xnnpack"} <= others
    assert "made one with python -m tfcnn.export" in report["notes"][0]
    assert report["input_shape"] == [28, 28, 1] and report["cpu"]["model"]

    bench_inference.print_table(report)
    out = capsys.readouterr().out
    assert out.startswith("CPU: ") and "tflite no xnnpack" in out and "p50 ms" in out


def _conv_ceiling():
    spec = importlib.util.spec_from_file_location("tfcnn_conv_ceiling", REPO / "benchmarks" / "conv_ceiling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_conv_ceiling_takes_every_convolution_of_the_resnet():
    conv_ceiling = _conv_ceiling()
    specs = conv_ceiling.conv_specs(stack_n=5, batch_size=128)
    dense_flops = 2 * 64 * 10
    assert len(specs) == 1 + 3 * 5 * 2 + 2  # stem, two per block, two projections
    resnet32 = models.build("resnet", (32, 32, 3), 10)
    assert sum(s["flops"] for s in specs) == bench.forward_flops(resnet32) - dense_flops
    assert [s["name"] for s in specs if s["stem"]] == ["stem_conv"]
    stem = specs[0]["flops"]
    assert conv_ceiling.training_flops(specs) == 3 * sum(s["flops"] for s in specs) - stem  # the stem needs no input gradient


def _conv_ceiling_tf_side(flag):
    """benchmarks/conv_ceiling.py on the smallest ResNet, TensorFlow only; its stdout."""
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "conv_ceiling.py"), "--stack-n", "1",
                          "--batch-size", "8", "--precision", "float32", "--rounds", "1", "--steps", "1",
                          "--torch-python", "", flag], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_conv_ceiling_runs_the_tensorflow_side():
    rows = [line for line in _conv_ceiling_tf_side("--in-order").splitlines() if line.startswith("| tfcnn (TensorFlow)")]
    assert len(rows) == 2  # free to overlap, layers in order
    for row in rows:
        ms, bound = (float(cell) for cell in row.split("|")[2:4])
        assert ms > 0 and bound == pytest.approx(8 / ms * 1000, rel=0.1)  # ms is printed to 0.1


def test_ablation_applies_its_precision_to_every_variant(shared_data):
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "ablation.py"), "--arch", "lenet5", "--dataset",
                          "mnist", "--batch-size", "16", "--steps", "2", "--rounds", "1", "--variants",
                          "default,bf16", "--precision", "float32", "--data-dir", str(shared_data), "--json"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {row["variant"]: row for row in json.loads(out.stdout.splitlines()[-1])["rows"]}
    assert rows["default"]["images_per_s"] > 0 and rows["bf16"]["images_per_s"] > 0
    assert (rows["default"]["precision"], rows["bf16"]["precision"]) == ("float32", "bfloat16")  # bf16 sets its own


def test_conv_ceiling_tables_onednn_primitive_times():
    stdout = _conv_ceiling_tf_side("--onednn-verbose")
    assert "tfcnn (TensorFlow): oneDNN v" in stdout
    directions = {line.split("|")[1].strip() for line in stdout.splitlines() if line.startswith("| ")}
    assert {"forward_training", "backward_data", "backward_weights"} <= directions
