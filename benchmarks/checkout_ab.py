"""Did a change move training speed? `python -m tfcnn.bench` in two checkouts, rounds interleaved.

    python benchmarks/checkout_ab.py --before 97b8d24 --rounds 3                    # ResNet-32, pipeline
    python benchmarks/checkout_ab.py --before main~5 --rounds 4 -- --arch lenet5 --steps 200

The `--before` revision is checked out into a temporary git worktree (removed at the end) that uses this
checkout's Python; each round runs `python -m tfcnn.bench ARGS --sources pipeline --repeat 1 --no-peak --json`
once in each checkout, one after the other in a fresh process, the order alternating between rounds. Prints
each run's images/s (window and median step), the median per side and the ratio after / before (> 1: the
change made training faster), with the CPU model.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tfcnn.hardware import cpu_info, describe_cpu  # noqa: E402


def bench_once(checkout, bench_args):
    """images/s (window, median step) of one `tfcnn.bench` run in `checkout`, in a fresh process."""
    cmd = [sys.executable, "-m", "tfcnn.bench", *bench_args, "--sources", "pipeline", "--repeat", "1", "--no-peak",
           "--json"]
    env = {**os.environ, "PYTHONPATH": str(checkout), "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"tfcnn.bench failed in {checkout}: {out.stderr.strip().splitlines()[-1:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])["results"][0]
    return row["images_per_s"], row["median_step_images_per_s"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", required=True, help="the git revision to compare this checkout against")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, each side once per round (default 3)")
    ap.add_argument("bench_args", nargs="*", help="after --: tfcnn.bench arguments (default: ResNet-32 on cifar10)")
    args = ap.parse_args(argv)
    bench_args = args.bench_args or ["--arch", "resnet", "--stack-n", "5", "--dataset", "cifar10"]
    print(describe_cpu(cpu_info()), flush=True)
    rev = subprocess.run(["git", "rev-parse", "--short", args.before], cwd=REPO, capture_output=True, text=True)
    if rev.returncode != 0:
        raise SystemExit(f"--before {args.before!r} is not a revision of this repository")
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(before), args.before], cwd=REPO, check=True,
                       capture_output=True)
        try:
            sides = {f"before ({rev.stdout.strip()})": before, "after (this checkout)": REPO}
            rates = {name: [] for name in sides}
            for round_ in range(args.rounds):
                order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
                for name in order:
                    rates[name].append(bench_once(sides[name], bench_args))
                    window, median = rates[name][-1]
                    print(f"[{round_ + 1}/{args.rounds}] {name}: {window:.1f} images/s (median step {median:.1f})",
                          flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=REPO, capture_output=True)
    (b_name, b), (a_name, a) = rates.items()
    for label, i in (("window", 0), ("median step", 1)):
        mb, ma = statistics.median(r[i] for r in b), statistics.median(r[i] for r in a)
        print(f"{label}: {b_name} {mb:.1f}, {a_name} {ma:.1f} images/s: after / before {ma / mb:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
