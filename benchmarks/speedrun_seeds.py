"""The speedrun's seed table: `tfcnn.train --config configs/cifar10_speedrun.yaml --seed N` for each seed, one at a
time, then per seed and over all of them (mean, std, min, max) the single-view and TTA test accuracy and the time
from the start of training to the TTA accuracy, with the CPU model.

    python benchmarks/speedrun_seeds.py --seeds 3 4 --also benchmarks/results/speedrun-vs-airbench-zen4.json

Each seed is a kept run, runs/cifar10-speedrun-sN: a finished one is read back, an interrupted one resumes (the
same command carries on). `--also FILE` adds the tfcnn rows of a speedrun_vs_airbench.py --json file for seeds
not run here (same CPU only), marked as such.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tfcnn.hardware import cpu_info, describe_cpu  # noqa: E402


def run_seed(config, seed, runs_dir):
    name = f"cifar10-speedrun-s{seed}"
    metrics_file = Path(runs_dir) / name / "metrics.json"
    if not metrics_file.exists():
        cmd = [sys.executable, "-m", "tfcnn.train", "--config", config, "--seed", str(seed), "--name", name,
               "--runs-dir", str(runs_dir), "--verbose", "2"]
        print(" ".join(cmd[1:]), flush=True)
        if subprocess.run(cmd, cwd=REPO).returncode != 0:
            raise SystemExit(f"the speedrun with seed {seed} failed (its log is above); the same command resumes it")
    metrics = json.loads(metrics_file.read_text())
    test = metrics["test"]
    return {"seed": seed, "source": f"runs/{name}", "time_s": metrics["time_to_tta_s"], "acc": test["accuracy"],
            "tta_acc": test["tta"]["accuracy"], "tta_s": test["tta"]["time_s"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="seeds to run (default 0-4)")
    ap.add_argument("--config", default="configs/cifar10_speedrun.yaml", help="the speedrun config")
    ap.add_argument("--runs-dir", default="runs", help="where the runs go (default runs/)")
    ap.add_argument("--also", help="a speedrun_vs_airbench.py --json file whose tfcnn rows join the table")
    args = ap.parse_args(argv)
    cpu = describe_cpu(cpu_info())
    print(cpu, flush=True)
    rows = [run_seed(args.config, seed, REPO / args.runs_dir) for seed in args.seeds]
    if args.also:
        saved = json.loads(Path(args.also).read_text())
        if saved.get("cpu") != cpu:
            raise SystemExit(f"{args.also} holds runs of another CPU ({saved.get('cpu')}), not {cpu}")
        have = {r["seed"] for r in rows}
        rows += [{"seed": r["seed"], "source": f"{args.also} (side by side)", "time_s": r["time_s"], "acc": r["acc"],
                  "tta_acc": r["tta_acc"], "tta_s": r.get("tta_s")}
                 for r in saved["rows"] if r["side"] == "tfcnn speedrun" and r["seed"] not in have]
    rows.sort(key=lambda r: r["seed"])
    print(f"\n{'seed':>4} {'single view':>11} {'TTA':>7} {'time s':>8} {'TTA pass s':>10}  source")
    for r in rows:
        print(f"{r['seed']:4d} {r['acc']:11.4f} {r['tta_acc']:7.4f} {r['time_s']:8.1f} {r['tta_s'] or 0:10.1f}  "
              f"{r['source']}")
    for key, label, digits in (("acc", "single view", 4), ("tta_acc", "TTA", 4), ("time_s", "time s", 1)):
        values = [r[key] for r in rows]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{label:>11}: mean {statistics.mean(values):.{digits}f}  std {std:.{digits}f}  "
              f"min {min(values):.{digits}f}  max {max(values):.{digits}f}  ({len(values)} seeds)")
    print(cpu)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
