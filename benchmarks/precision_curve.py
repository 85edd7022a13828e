"""Does bfloat16 keep accuracy? The same short training run in float32 and in bfloat16, side by side.

    .venv/bin/python benchmarks/precision_curve.py --data-dir ../shared/data \
        --precisions float32,bfloat16 --stack-n 3 --limit-train 10000 --epochs 5

Each precision is one `python -m tfcnn.train` run (the real trainer, a fresh process each, since
the precision setting is process-wide) with the same seed, data and schedule; the table lists
validation accuracy and epoch time per epoch, then test accuracy. Runs alternate when --seeds
gives several seeds.
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(args, precision, seed, out):
    name = f"{precision}-s{seed}"
    cmd = [sys.executable, "-m", "tfcnn.train", "--arch", "resnet", "--stack-n", str(args.stack_n),
           "--limit-train", str(args.limit_train), "--epochs", str(args.epochs), "--mixed-precision", precision,
           "--seed", str(seed), "--data-dir", args.data_dir, "--runs-dir", str(out / "runs"),
           "--saved-models-dir", str(out / "saved"), "--name", name, "--verbose", "0", "--no-tensorboard"]
    if args.milestones:
        cmd += ["--milestones", args.milestones]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed: {done.stderr.strip().splitlines()[-1:]}")
    run_dir = out / "runs" / name
    with open(run_dir / "history.csv") as f:
        history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"precision": precision, "seed": seed, "policy": metrics["precision_policy"],
            "val_accuracy": [round(r["val_accuracy"], 4) for r in history],
            "epoch_time_s": [round(r["epoch_time_s"], 1) for r in history],
            "test_accuracy": metrics["test"]["accuracy"], "train_images_per_s": metrics["train_images_per_s"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("TFCNN_DATA_DIR", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--precisions", default="float32,bfloat16")
    ap.add_argument("--stack-n", type=int, default=3)
    ap.add_argument("--limit-train", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--milestones", help="lr x0.1 at these epochs, e.g. 4,5 (default: the lab's 81,122, so a short "
                    "run keeps lr 0.1 throughout)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="tfcnn-precision-"))
    load = [round(os.getloadavg()[0], 2)]
    results = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for precision in args.precisions.split(","):
            results.append(run(args, precision, seed, out))
            load.append(round(os.getloadavg()[0], 2))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps({"args": vars(args), "load_avg_1min": load, "results": results}))
        return
    drops = f", x0.1 at epochs {args.milestones}" if args.milestones else ""
    print(f"ResNet-{6 * args.stack_n + 2}, {args.limit_train} training images, {args.epochs} epochs "
          f"(SGD 0.1 Nesterov{drops}, batch 128, crop+flip); 1-min load {load}")
    epochs = "  ".join(f"ep{e + 1:<4}" for e in range(args.epochs))
    print(f"{'precision':10} {'seed':>4}  val acc: {epochs}  test acc  img/s  epoch s")
    for r in results:
        accs = "  ".join(f"{a:.4f}" for a in r["val_accuracy"])
        print(f"{r['precision']:10} {r['seed']:4d}  {accs}  {r['test_accuracy']:.4f}  "
              f"{r['train_images_per_s']:6.1f}  {r['epoch_time_s']}")


if __name__ == "__main__":
    main()
