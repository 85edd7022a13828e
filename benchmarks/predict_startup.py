"""Start-up cost of `python -m tfcnn.predict` on one image, per model format, in fresh processes.

    python benchmarks/predict_startup.py --rounds 8

Each round runs, in turn: `python -c pass` (the interpreter alone), predict on the shipped LeNet-5's
model.onnx (onnxruntime, no TensorFlow), on a .tflite export of it (LiteRT, no TensorFlow; made once in
a temporary folder) and on its SavedModel (TensorFlow). Reports the median wall and CPU time per
variant and the ratio to the SavedModel path, with the CPU model and load average.
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tfcnn.hardware import cpu_info, describe_cpu  # noqa: E402  (stdlib only)
MODEL = REPO / "saved_models" / "lenet5-mnist"


def timed(cmd, env):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode:
        sys.exit(f"error: {' '.join(map(str, cmd))} failed: {out.stderr.strip().splitlines()[-1]}")
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8, help="rounds, variants interleaved (default 8)")
    args = parser.parse_args(argv)
    py = sys.executable
    data_dir = Path(os.environ.get("TFCNN_DATA_DIR", REPO.parent / "shared" / "data")).resolve()
    if not (data_dir / "mnist.npz").is_file():
        sys.exit(f"error: no mnist.npz in {data_dir}: set TFCNN_DATA_DIR to the dataset folder (../shared/data)")
    # The children get the same folder: the TFLite export checks its parity on MNIST test images.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TFCNN_DATA_DIR": str(data_dir)}
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "digit.png"
        Image.fromarray(np.load(data_dir / "mnist.npz")["x_test"][0]).save(image)  # a 7
        tflite = Path(tmp) / "model.tflite"
        timed([py, "-m", "tfcnn.export", "--model", str(MODEL), "--format", "tflite", "--out", str(tflite)], env)
        variants = {
            "python -c pass": [py, "-c", "pass"],
            "predict .onnx": [py, "-m", "tfcnn.predict", "--model", str(MODEL / "model.onnx"), str(image)],
            "predict .tflite": [py, "-m", "tfcnn.predict", "--model", str(tflite), str(image)],
            "predict SavedModel": [py, "-m", "tfcnn.predict", "--model", str(MODEL), str(image)],
        }
        walls = {k: [] for k in variants}
        cpus = {k: [] for k in variants}
        loads = []
        for _ in range(args.rounds):
            for name, cmd in variants.items():
                wall, cpu = timed(cmd, env)
                walls[name].append(wall)
                cpus[name].append(cpu)
            loads.append(os.getloadavg()[0])
    print(f"{describe_cpu(cpu_info())}, load average {min(loads):.1f}-{max(loads):.1f}, "
          f"{args.rounds} rounds interleaved")
    base = statistics.median(walls["predict SavedModel"])
    print(f"{'variant':20} {'wall median':>12} {'min':>7} {'max':>7} {'CPU median':>11} {'vs SavedModel':>14}")
    for name in variants:
        wall = statistics.median(walls[name])
        print(f"{name:20} {wall:10.2f} s {min(walls[name]):7.2f} {max(walls[name]):7.2f} "
              f"{statistics.median(cpus[name]):9.2f} s {wall / base:13.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
