"""The bench CLI and notebook API on a tiny model (no speed asserts: the figures live in benchmarks/)."""
import json
import subprocess
import sys

import pytest

from tfcnn import bench
from tests.conftest import REPO


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


def test_cli_table(shared_data, capsys):
    assert bench.main(_tiny(shared_data, "--sources", "synthetic")) == 0
    out = capsys.readouterr().out
    assert "tfcnn synthetic" in out and "per device" in out


def test_time_training_api(shared_data):
    result = bench.time_training("lenet5", "mnist", batch_size=16, steps=2, data_dir=str(shared_data),
                                 source="synthetic", conv_layers=1)
    assert result["images_per_s"] > 0 and result["median_step_images_per_s"] > 0
    assert result["device"] == bench.devices()[0]
    assert result["epoch_time_s"] == pytest.approx(54000 / result["images_per_s"], rel=0.01)


@pytest.mark.parametrize("argv, message", [
    (["--arch", "nope"], "unknown --arch 'nope'"),
    (["--arch", "lenet5", "--steps", "1"], "--steps must be at least 2"),
    (["--arch", "lenet5", "--sources", "disk"], "--sources takes"),
    (["--arch", "lenet5", "--vs-pytorch", "--torch-python", "/nonexistent/python", "--sources", "synthetic"],
     "no PyTorch interpreter"),
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
                                   "cifar_cnn, lenet5, mobilenet_v2, pooled, resnet, two_conv")
