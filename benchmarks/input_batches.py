"""Does the input pipeline starve the model? The trainer's pipeline vs in-memory batches, in one process.

    .venv/bin/python benchmarks/input_batches.py --arch resnet --stack-n 5 --rounds 3 --steps 40

Each variant trains a fresh copy of the trainer's model (tfcnn.bench's session: same compile,
threads and precision) for --steps timed steps; rounds alternate the variants. Variants:
  pipeline         the trainer's tf.data pipeline (decode cache, per-epoch shuffle, augmentation)
  pipeline_cached  the pipeline's first N batches cached in memory and cycled: the same images with
                   no pipeline work left, so any gap to `pipeline` is what the pipeline costs
  synthetic        tfcnn.bench's synthetic source: 8 distinct random batches in memory, cycled
  one_batch        a single random batch repeated
Prints the median over rounds of the median-step rate (batch / median step time) and its ratio to
`pipeline`.
"""
import argparse
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("pipeline", "pipeline_cached", "synthetic", "one_batch")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="resnet")
    ap.add_argument("--dataset", help="default: the arch's")
    ap.add_argument("--stack-n", type=int)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cached-batches", type=int, default=45)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--data-dir", default=os.environ.get("TFCNN_DATA_DIR", str(REPO.parent / "shared" / "data")))
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from tfcnn import bench, pipelines

    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    options = {"stack_n": args.stack_n} if args.stack_n else {}
    session = bench.Session(args.arch, args.dataset, batch_size=args.batch_size, data_dir=args.data_dir, **options)
    pipeline_epochs = pipelines.train_epochs

    def cached_epochs(*a, **k):
        return pipeline_epochs(*a, **k).take(args.cached_batches).cache().repeat()

    load = [round(os.getloadavg()[0], 2)]
    rates = {n: [] for n in names}
    for _ in range(args.rounds):
        for name in names:
            pipelines.train_epochs = cached_epochs if name == "pipeline_cached" else pipeline_epochs
            source = "pipeline" if name.startswith("pipeline") else name
            _, median = session.run(source, args.steps)
            rates[name].append(round(median, 1))
            print(f"  {name:16} {median:8.1f} img/s (median step)", file=sys.stderr, flush=True)
    pipelines.train_epochs = pipeline_epochs
    load.append(round(os.getloadavg()[0], 2))
    print(f"{args.arch} {options} on {session.config.dataset}, batch {args.batch_size}, {args.steps} steps x "
          f"{args.rounds} rounds, precision {session.precision}; 1-min load {load}")
    base = statistics.median(rates[names[0]])
    print(f"{'variant':16} {'img/s':>8} {'vs ' + names[0]:>14}  runs")
    for name in names:
        rate = statistics.median(rates[name])
        print(f"{name:16} {rate:8.1f} {rate / base:13.2f}x  {rates[name]}")


if __name__ == "__main__":
    main()
