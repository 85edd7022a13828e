"""tfcnn's CIFAR-10 speedrun side by side with airbench94 itself, on the same data and CPU, rounds interleaved.

    python benchmarks/speedrun_vs_airbench.py --seeds 0 1 2                 # bf16 airbench vs the speedrun config
    python benchmarks/speedrun_vs_airbench.py --seeds 0 --airbench-precision float32 bfloat16

Each round runs, one after the other and never at once, airbench94 (the published pip package in .venv-torch,
through benchmarks/airbench_cpu.py: its CUDA calls mapped to the CPU, its training code unchanged) and
`python -m tfcnn.train --config configs/cifar10_speedrun.yaml --seed N`; the order alternates between rounds.
Both clocks run from the start of training (whitening init included) to the final TTA accuracy: airbench's
own, and tfcnn's time_to_tta_s (model build, init, graph building, every epoch and the TTA pass; the dataset
load before it is reported apart). Prints each run, then per side the mean (std) time, single-view and TTA
accuracy, and the ratio of mean times (airbench / tfcnn: > 1 means tfcnn is faster), with the CPU model.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tfcnn.hardware import cpu_info, describe_cpu  # noqa: E402


def run_airbench(torch_python, precision, seed, data_dir):
    cmd = [torch_python, str(REPO / "benchmarks" / "airbench_cpu.py"), "--precision", precision, "--seed", str(seed),
           "--data-dir", data_dir, "--quiet"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"airbench94 failed (seed {seed}, {precision}): {out.stderr.strip().splitlines()[-1:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"side": f"airbench94 ({precision})", "seed": seed, "time_s": result["time_s"], "acc": result["acc"],
            "tta_acc": result["tta_acc"]}


def run_tfcnn(config, seed, workdir, extra, data_dir):
    name = f"speedrun-bench-s{seed}"
    cmd = [sys.executable, "-m", "tfcnn.train", "--config", config, "--seed", str(seed), "--name", name,
           "--data-dir", data_dir,
           "--runs-dir", str(workdir / "runs"), "--saved-models-dir", str(workdir / "saved_models"), "--overwrite",
           "--verbose", "0", *extra]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    process = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"tfcnn speedrun failed (seed {seed}): {out.stderr.strip().splitlines()[-1:]}")
    metrics = json.loads((workdir / "runs" / name / "metrics.json").read_text())
    test = metrics["test"]
    return {"side": "tfcnn speedrun", "seed": seed, "time_s": metrics["time_to_tta_s"], "acc": test["accuracy"],
            "tta_acc": test["tta"]["accuracy"], "process_s": round(process, 1), "epochs_s": metrics["train_time_s"],
            "tta_s": test["tta"]["time_s"]}


def summary(rows):
    def stats(key):
        values = [r[key] for r in rows]
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
    return {key: stats(key) for key in ("time_s", "acc", "tta_acc")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one round per seed (default 0 1 2)")
    ap.add_argument("--airbench-precision", nargs="+", choices=("float32", "bfloat16"), default=["bfloat16"],
                    help="airbench94 variants run in each round (default bfloat16)")
    ap.add_argument("--config", default="configs/cifar10_speedrun.yaml", help="tfcnn's side (default the speedrun)")
    ap.add_argument("--tfcnn-arg", action="append", default=[], help="an extra tfcnn.train argument (repeatable)")
    ap.add_argument("--torch-python", default=str(REPO / ".venv-torch" / "bin" / "python"),
                    help="python of the venv with torch and airbench (default .venv-torch/bin/python)")
    ap.add_argument("--data-dir", default=os.environ.get("TFCNN_DATA_DIR", str(REPO.parent / "shared" / "data")),
                    help="folder with cifar-10-python.tar.gz (default $TFCNN_DATA_DIR or ../shared/data)")
    ap.add_argument("--json", help="write every run to this file as it finishes, and the summary at the end; an "
                                   "interrupted invocation with the same file carries on where it stopped")
    args = ap.parse_args(argv)
    if not Path(args.torch_python).exists():
        raise SystemExit(f"no PyTorch interpreter at {args.torch_python}; create .venv-torch: python3 -m venv "
                         ".venv-torch && .venv-torch/bin/pip install -r benchmarks/requirements-torch.txt")
    cpu = describe_cpu(cpu_info())
    print(cpu, flush=True)
    rows = []
    if args.json and Path(args.json).exists():
        # An interrupted invocation carries on: its finished runs are kept (same CPU only), the rest are run.
        saved = json.loads(Path(args.json).read_text())
        if saved.get("cpu") != cpu:
            raise SystemExit(f"{args.json} holds runs of another CPU ({saved.get('cpu')}); name another --json")
        rows = saved["rows"]
        print(f"resuming: {len(rows)} runs already in {args.json}", flush=True)
    done = {(r["side"], r["seed"]) for r in rows}
    with tempfile.TemporaryDirectory(prefix="speedrun-bench-") as tmp:
        for i, seed in enumerate(args.seeds):
            sides = [("airbench", p) for p in args.airbench_precision] + [("tfcnn", None)]
            for side, precision in (sides if i % 2 == 0 else sides[::-1]):
                label = f"airbench94 ({precision})" if side == "airbench" else "tfcnn speedrun"
                if (label, seed) in done:
                    continue
                if side == "airbench":
                    row = run_airbench(args.torch_python, precision, seed, args.data_dir)
                else:
                    row = run_tfcnn(args.config, seed, Path(tmp), args.tfcnn_arg, args.data_dir)
                rows.append(row)
                print(f"  {row['side']:26} seed {seed}: {row['time_s']:7.1f} s  single view {row['acc']:.4f}  "
                      f"TTA {row['tta_acc']:.4f}", flush=True)
                if args.json:
                    Path(args.json).write_text(json.dumps({"cpu": cpu, "rows": rows}, indent=2) + "\n")
    sides = {}
    for row in rows:
        sides.setdefault(row["side"], []).append(row)
    table = {side: summary(r) for side, r in sides.items()}
    print(f"\n{'side':26} {'runs':>4} {'time s (std)':>16} {'single view (std)':>20} {'TTA (std)':>18}")
    for side, s in table.items():
        print(f"{side:26} {len(sides[side]):4d} {s['time_s'][0]:9.1f} ({s['time_s'][1]:4.1f}) "
              f"{s['acc'][0]:12.4f} ({s['acc'][1]:.4f}) {s['tta_acc'][0]:10.4f} ({s['tta_acc'][1]:.4f})")
    ours = table["tfcnn speedrun"]["time_s"][0]
    for side, s in table.items():
        if side != "tfcnn speedrun":
            print(f"tfcnn speedrun vs {side}: {s['time_s'][0] / ours:.2f}x faster, TTA "
                  f"{table['tfcnn speedrun']['tta_acc'][0] - s['tta_acc'][0]:+.4f}")
    print(cpu)
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu, "rows": rows, "summary": table}, indent=2) + "\n")


if __name__ == "__main__":
    main()
