"""Run one multi-worker training on this machine: N `tfcnn.train` workers joined by TF_CONFIG.

    python -m tfcnn.launch --workers 2 -- --arch lenet5 --epochs 1 --limit-train 2048 --name mw-demo

Each worker is `python -m tfcnn.train <flags> --strategy multiworker` with its own TF_CONFIG on 127.0.0.1
(free ports); worker 0 is the chief and writes runs/<name>/. Their output is streamed with a `[worker i]`
prefix. When one worker fails, the others are stopped and the launcher exits with its status; run the same
command again to resume. On several hosts, start the workers yourself (README, "Training on several machines").
"""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from tfcnn.errors import ArgumentParser, TfcnnError, run_cli

HOST = "127.0.0.1"
STOP_GRACE_S = 10  # after SIGTERM, before SIGKILL
POLL_S = 0.2


def free_ports(n):
    """n distinct TCP ports free on HOST now (all bound at once so the OS cannot hand one out twice)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(addresses, index):
    return json.dumps({"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": index}})


def worker_args(train_args):
    """The tfcnn.train flags every worker gets: the user's, with --strategy multiworker."""
    args = list(train_args)
    for i, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("--strategy=") else (
            args[i + 1] if arg == "--strategy" and i + 1 < len(args) else None)
        if value is not None and value != "multiworker":
            raise TfcnnError(f"the launcher runs --strategy multiworker, not {value!r}; drop --strategy")
    if not any(arg == "--strategy" or arg.startswith("--strategy=") for arg in args):
        args += ["--strategy", "multiworker"]
    return args


def _stream(pipe, prefix, out, lock):
    for line in pipe:
        with lock:
            out.write(prefix + line)
            out.flush()


def _stop(procs):
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def launch(workers, train_args, *, env=None):
    """Run `workers` local workers to the end; returns 0, or the exit status of the first one that failed."""
    if workers < 1:
        raise TfcnnError(f"--workers must be at least 1, got {workers}")
    args = worker_args(train_args)
    addresses = [f"{HOST}:{port}" for port in free_ports(workers)]
    base_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    lock = threading.Lock()
    procs, threads = [], []
    try:
        for i in range(workers):
            proc = subprocess.Popen([sys.executable, "-m", "tfcnn.train", *args], text=True, bufsize=1,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env={**base_env, "TF_CONFIG": tf_config(addresses, i)})
            procs.append(proc)
            for pipe, out in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr)):
                thread = threading.Thread(target=_stream, args=(pipe, f"[worker {i}] ", out, lock), daemon=True)
                thread.start()
                threads.append(thread)
        while True:
            codes = [proc.poll() for proc in procs]
            failed = next((i for i, code in enumerate(codes) if code not in (None, 0)), None)
            if failed is not None or all(code == 0 for code in codes):
                break
            time.sleep(POLL_S)
        status = 0 if failed is None else codes[failed]
        if failed is not None:
            with lock:
                sys.stderr.write(f"launch: worker {failed} exited with status {status}; stopping the others\n")
            _stop(procs)
    except KeyboardInterrupt:
        _stop(procs)
        status = 130
    for thread in threads:
        thread.join(timeout=5)
    return status


def _interrupted(signum, frame):
    raise KeyboardInterrupt  # SIGTERM stops the workers as Ctrl-C does


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    own, train_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = ArgumentParser(prog="python -m tfcnn.launch", description=__doc__.split("\n")[0],
                            epilog="Everything after -- goes to every worker's python -m tfcnn.train.")
    parser.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    args = parser.parse_args(own)
    if not train_args:
        raise TfcnnError("give the training flags after --, e.g. "
                         "python -m tfcnn.launch --workers 2 -- --arch lenet5 --epochs 1 --name mw-demo")
    return launch(args.workers, train_args)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupted)
    sys.exit(run_cli(main))
