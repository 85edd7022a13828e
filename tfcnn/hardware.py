"""The machine a benchmark ran on: CPU model, native bfloat16, load, and the measured matmul peak.

Benchmarks print these with their figures (tfcnn.bench, tfcnn.bench_inference), since images/s mean
little without the CPU they came from and how busy it was.
"""
import os
import platform
import time
from pathlib import Path

PEAK_SIZE = 2048  # square matmul of the probe: 17 GFLOP, big enough to reach the peak, small enough to repeat
PEAK_SECONDS = 1.0


def cpu_has_bf16():
    """The CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16 in /proc/cpuinfo's flags)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_info():
    """{"model", "family", "model_number", "native_bf16", "cores"} from /proc/cpuinfo (Linux; else what is known)."""
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return {"model": fields.get("model name") or platform.processor() or platform.machine(),
            "family": fields.get("cpu family"), "model_number": fields.get("model"),
            "native_bf16": cpu_has_bf16(), "cores": os.cpu_count()}


def describe_cpu(cpu):
    """One line: 'CPU: AMD EPYC (family 25, model 17), 2 cores, native bfloat16: yes'."""
    family = f" (family {cpu['family']}, model {cpu['model_number']})" if cpu.get("family") else ""
    return (f"CPU: {cpu['model']}{family}, {cpu['cores']} cores, native bfloat16: "
            f"{'yes' if cpu['native_bf16'] else 'no'}")


def load_average():
    """The 1, 5 and 15-minute load averages, or None where the OS has none."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def matmul_peak(dtype="float32", size=PEAK_SIZE, seconds=PEAK_SECONDS):
    """(best GFLOP/s, GFLOP per CPU-second) of size x size TF matmuls over ~`seconds`, in this process
    (so under its thread settings). The first is what the machine's GEMM reaches right now in wall time;
    the second divides all the probe's FLOPs by the CPU time its threads got, which other processes
    on the same cores hardly change (compare it with a run's FLOPs per CPU-second)."""
    import tensorflow as tf

    a = tf.cast(tf.random.uniform((size, size), seed=1), dtype)
    b = tf.cast(tf.random.uniform((size, size), seed=2), dtype)
    tf.linalg.matmul(a, b)[0, 0].numpy()  # first call: kernel selection, page faults
    best, calls, cpu0 = 0.0, 0, time.process_time()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        tf.linalg.matmul(a, b)[0, 0].numpy()
        best = max(best, 2 * size ** 3 / (time.perf_counter() - start) / 1e9)
        calls += 1
    return best, 2 * size ** 3 * calls / max(time.process_time() - cpu0, 1e-9) / 1e9
