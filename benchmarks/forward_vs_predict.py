"""Keras' model.predict against tfcnn.evaluate.forward (one traced call per model) on the same batches, rounds
interleaved in one process: the untrained airbench94 net, 10,000 random CIFAR-sized images, bfloat16 graph pass.

    python benchmarks/forward_vs_predict.py --rounds 2 --batch 1000
"""
import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfcnn import evaluate, kernels, models  # noqa: E402
from tfcnn.hardware import cpu_info, describe_cpu  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds of each side, interleaved (default 2)")
    ap.add_argument("--batch", type=int, default=1000, help="batch size (default 1000, the TTA pass's)")
    args = ap.parse_args(argv)
    tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})
    model = models.build("airbench94", (32, 32, 3), 10)
    x = np.random.default_rng(0).integers(0, 256, (10000, 32, 32, 3)).astype("float32")
    sides = {"model.predict": lambda: model.predict(x, batch_size=args.batch, verbose=0),
             "evaluate.forward": lambda: evaluate.forward(model, x, args.batch)}
    with kernels.compiled_inference():
        for run in sides.values():
            run()  # traces
        for r in range(args.rounds):
            for name, run in sides.items():
                start = time.perf_counter()
                run()
                print(f"round {r}: {name:17} {time.perf_counter() - start:6.2f} s", flush=True)
    print(describe_cpu(cpu_info()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
