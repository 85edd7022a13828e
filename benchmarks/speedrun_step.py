"""Seconds per training step of the speedrun's network (airbench94) by activation, on synthetic data.

    python benchmarks/speedrun_step.py                      # relu, gelu_tf, gelu at batch 1024, 5 steps each
    python benchmarks/speedrun_step.py --variants gelu --batch 2000

Variants: relu; gelu_tf (exact GELU as TF's elementwise ops, keras.ops.gelu); gelu (tfcnn's GELU layer: one
XLA kernel forward, one backward, tfcnn.kernels). The model comes from tfcnn.models.build and the runtime
(threads, bfloat16 on CPUs that compute it) from tfcnn.train.configure_runtime, as a run sets them up. Each variant
runs in its own process, after two untimed steps (graph building). Prints the CPU model.
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one(variant, batch, steps):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    from tfcnn import config as config_lib, models, train

    train.configure_runtime(config_lib.make_config({"arch": "airbench94", "dataset": "cifar10"}))
    if variant == "gelu_tf":
        models.GELU.call = lambda self, x, training=None: keras.ops.gelu(x, approximate=False)
    model = models.build("airbench94", (32, 32, 3), 10, normalization=([125.0] * 3, [60.0] * 3),
                         activation="relu" if variant == "relu" else "gelu")
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True),
                  loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, batch)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    print(f"{(time.perf_counter() - start) / steps:.3f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", nargs="+", default=["relu", "gelu_tf", "gelu"], choices=("relu", "gelu_tf", "gelu"),
                    help="activations to time (default all three)")
    ap.add_argument("--batch", type=int, default=1024, help="images per step (default 1024, airbench94's)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant (default 5)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        return one(args.one, args.batch, args.steps)
    sys.path.insert(0, str(REPO))
    from tfcnn.hardware import cpu_info, describe_cpu

    print(describe_cpu(cpu_info()), flush=True)
    for variant in args.variants:
        out = subprocess.run([sys.executable, __file__, "--one", variant, "--batch", str(args.batch),
                              "--steps", str(args.steps)], capture_output=True, text=True, cwd=REPO)
        if out.returncode != 0:
            raise SystemExit(f"{variant} failed: {out.stderr.strip().splitlines()[-1:]}")
        print(f"{variant:8} {float(out.stdout.strip().splitlines()[-1]):.3f} s/step at batch {args.batch}",
              flush=True)


if __name__ == "__main__":
    main()
