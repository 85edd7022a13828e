"""What durable writes cost: epoch times of a real run (tfcnn.train.train_and_evaluate) with its flushes (fsync of
each checkpoint file before its rename and of its folder after, history.csv, TensorBoard) on and off, rounds
interleaved in one process. "off" replaces tfcnn.runfiles.fsync with a no-op here only.

    python benchmarks/durability_cost.py --arch lenet5 --dataset mnist --limit-train 20000 --rounds 3
    python benchmarks/durability_cost.py --arch resnet --dataset cifar10 --limit-train 5000 --rounds 3

An epoch's time runs from its start to the next one's (the last: to the end of training), so it holds every
callback's writes, the backup's last; the first epoch of each run (tracing) is left out. Also printed: the flushes
per epoch and the seconds spent inside them (measured around each fsync in the "on" rounds).
"""
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402

from tfcnn import config as config_lib, runfiles, train  # noqa: E402
from tfcnn.errors import ArgumentParser  # noqa: E402
from tfcnn.hardware import cpu_info, describe_cpu  # noqa: E402


class EpochClock(keras.callbacks.Callback):
    """Per epoch, from its start to the next one's (the last epoch's: to the end of training): (wall seconds,
    fsync calls, seconds inside fsync)."""

    def __init__(self, flushes):
        super().__init__()
        self.flushes, self.marks = flushes, []

    def _mark(self):
        self.marks.append((time.perf_counter(), self.flushes.calls, self.flushes.seconds))

    def on_epoch_begin(self, epoch, logs=None):
        self._mark()

    def on_train_end(self, logs=None):
        self._mark()

    def epochs(self):
        return [tuple(b - a for a, b in zip(start, end)) for start, end in zip(self.marks, self.marks[1:])]


class Flushes:
    """runfiles.fsync, counted and timed ("on") or skipped ("off")."""

    def __init__(self):
        self.real, self.calls, self.seconds = runfiles.fsync, 0, 0.0

    def timed(self, path):
        start = time.perf_counter()
        self.real(path)
        self.seconds += time.perf_counter() - start
        self.calls += 1

    def set(self, on):
        runfiles.fsync = self.timed if on else (lambda path: None)  # fsync_dir and fsync_tree call it too


def main(argv=None):
    ap = ArgumentParser(prog="python benchmarks/durability_cost.py", description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="runs with flushes on and off each, interleaved (default 3)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is not timed (default 3)")
    ap.add_argument("--arch", default="lenet5", help="architecture (default lenet5)")
    ap.add_argument("--dataset", default="mnist", help="dataset (default mnist)")
    ap.add_argument("--limit-train", type=int, default=None, help="train images per epoch (default: all)")
    ap.add_argument("--data-dir", default=None, help="dataset folder (default $TFCNN_DATA_DIR, else ./data)")
    args, extra = ap.parse_known_args(argv)
    flags = ArgumentParser(prog="train flags")
    config_lib.add_flags(flags)
    flushes = Flushes()
    times, flushed = {True: [], False: []}, []
    with tempfile.TemporaryDirectory(prefix="durability-cost-") as root:
        for r in range(args.rounds):
            for on in ((True, False) if r % 2 == 0 else (False, True)):
                name = f"{'on' if on else 'off'}-{r}"
                config = config_lib.from_args(flags.parse_args([
                    "--arch", args.arch, "--dataset", args.dataset, "--epochs", str(args.epochs), "--limit-test", "1000",
                    "--runs-dir", f"{root}/runs", "--saved-models-dir", f"{root}/saved", "--name", name,
                    "--verbose", "0", *(["--limit-train", str(args.limit_train)] if args.limit_train else []),
                    *(["--data-dir", args.data_dir] if args.data_dir else []), *extra]))
                clock = EpochClock(flushes)
                flushes.set(on)
                try:
                    train.train_and_evaluate(config, callbacks=[clock])
                finally:
                    runfiles.fsync = flushes.real
                timed = clock.epochs()[1:]
                times[on] += [wall for wall, _, _ in timed]
                if on:
                    flushed += [(calls, seconds) for _, calls, seconds in timed]
                print(f"round {r} flushes {'on ' if on else 'off'}: epochs "
                      f"{', '.join(f'{wall:.2f}' for wall, _, _ in timed)} s", flush=True)
    on, off = statistics.median(times[True]), statistics.median(times[False])
    calls, seconds = statistics.median(c for c, _ in flushed), statistics.median(s for _, s in flushed)
    print(f"{args.arch} on {args.dataset} ({args.limit_train or 'all'} train images), {args.rounds} rounds x "
          f"{args.epochs - 1} timed epochs: median epoch {on:.3f} s with flushes, {off:.3f} s without, ratio "
          f"{on / off:.4f}; per epoch {calls:.0f} fsyncs taking {seconds * 1000:.1f} ms ({100 * seconds / on:.2f}% "
          "of the epoch)")
    print(describe_cpu(cpu_info()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
