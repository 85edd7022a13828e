"""How fast could a ResNet training step be if everything but its convolutions cost nothing?

    .venv/bin/python benchmarks/conv_ceiling.py --stack-n 5 --precision bfloat16 --rounds 5

Takes every Conv2D of tfcnn's ResNet (input shape, kernel, stride) and runs, per step, exactly the
convolution work of one training step on random tensors of those shapes: the forward convolution
with its bias, the gradient of the input (all but the stem, whose input needs none) and the gradient
of the kernel and bias. Nothing else: no batch norm, ReLU, additions, loss or optimizer.

- TensorFlow: all of them in one tf.function under tfcnn's runtime settings (TF's own thread pools,
  oneDNN), the ops TF's training graph runs (Conv2D + BiasAdd, Conv2DBackpropInput,
  Conv2DBackpropFilter + BiasAddGrad), left to TF's executor, which may run independent ones side by side.
- PyTorch (`.venv-torch`, the same interpreter as benchmarks/torch_peers.py): the same shapes,
  channels_last, through `aten.convolution` and `aten.convolution_backward`, the ops autograd runs.

The time of that convolution-only step bounds a framework's training speed from above: a full step
does this work and more. TF may run independent convolutions side by side here, which a real step's
dependencies partly forbid; `--in-order` adds a TF side where each layer waits for the previous one.
The output gives, per side, ms per step, the bound in images/s and the GFLOP/s of the convolutions;
rounds alternate between the sides.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def conv_specs(stack_n, batch_size):
    """[{name, n, h, w, cin, oh, ow, cout, k, stride, stem, flops}] of tfcnn's CIFAR ResNet, read off the
    built model; `flops` is the forward convolution's per image, counted as tfcnn.bench counts it."""
    sys.path.insert(0, str(REPO))
    import keras

    from tfcnn import bench, models

    model = models.build("resnet", (32, 32, 3), 10, stack_n=stack_n)
    specs = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, cin = layer.input.shape
            _, oh, ow, _ = layer.output.shape
            one = keras.Sequential([keras.Input(layer.input.shape[1:]),
                                    layer.__class__.from_config(layer.get_config())])
            specs.append(dict(name=layer.name, n=batch_size, h=h, w=w, cin=cin, oh=oh, ow=ow, cout=layer.filters,
                              k=layer.kernel_size[0], stride=layer.strides[0], stem=layer.name == "stem_conv",
                              flops=bench.forward_flops(one)))
    return specs


def training_flops(specs):
    """Per image: forward + input gradient (not for the stem) + kernel gradient, each the forward's FLOPs."""
    return sum(s["flops"] * (2 if s["stem"] else 3) for s in specs)


def tf_step(specs, precision, in_order=False):
    """in_order: each layer's convolutions wait for the previous layer's (its forward and both gradients may
    still run side by side), stricter than a real step, whose weight gradients may run alongside later layers;
    otherwise TF may overlap any of them."""
    import tensorflow as tf

    dtype = tf.bfloat16 if precision == "bfloat16" else tf.float32
    tensors = []
    for s in specs:
        tensors.append(dict(
            x=tf.cast(tf.random.normal([s["n"], s["h"], s["w"], s["cin"]]), dtype),
            kernel=tf.cast(tf.random.normal([s["k"], s["k"], s["cin"], s["cout"]], stddev=0.05), dtype),
            bias=tf.zeros([s["cout"]], dtype),
            dy=tf.cast(tf.random.normal([s["n"], s["oh"], s["ow"], s["cout"]]), dtype)))

    def layer(s, t):
        """One layer's convolution work; returns a scalar of each result, so none is pruned."""
        strides = [1, s["stride"], s["stride"], 1]
        y = tf.nn.bias_add(tf.nn.conv2d(t["x"], t["kernel"], strides, "SAME"), t["bias"])
        dkernel = tf.raw_ops.Conv2DBackpropFilter(input=t["x"], filter_sizes=tf.shape(t["kernel"]),
                                                  out_backprop=t["dy"], strides=strides, padding="SAME")
        dbias = tf.raw_ops.BiasAddGrad(out_backprop=t["dy"])
        probes = [y[0, 0, 0, 0], dkernel[0, 0, 0, 0], dbias[0]]
        if not s["stem"]:
            dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(t["x"]), filter=t["kernel"],
                                                out_backprop=t["dy"], strides=strides, padding="SAME")
            probes.append(dx[0, 0, 0, 0])
        return probes

    @tf.function
    def step():
        probes, previous = [], []
        for s, t in zip(specs, tensors):
            with tf.control_dependencies(previous if in_order else []):
                previous = layer(s, t)
            probes += previous
        return tf.add_n([tf.cast(p, tf.float32) for p in probes])

    return lambda: float(step())


def torch_step(specs, precision):
    import torch

    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    tensors = []
    cl = dict(memory_format=torch.channels_last)
    for s in specs:
        tensors.append(dict(
            x=torch.randn(s["n"], s["cin"], s["h"], s["w"]).to(dtype).contiguous(**cl),
            kernel=(torch.randn(s["cout"], s["cin"], s["k"], s["k"]) * 0.05).to(dtype).contiguous(**cl),
            bias=torch.zeros(s["cout"], dtype=dtype),
            dy=torch.randn(s["n"], s["cout"], s["oh"], s["ow"]).to(dtype).contiguous(**cl)))

    def step():
        total = 0.0
        with torch.no_grad():
            for s, t in zip(specs, tensors):
                stride, pad = [s["stride"]] * 2, [s["k"] // 2] * 2
                y = torch.ops.aten.convolution(t["x"], t["kernel"], t["bias"], stride, pad, [1, 1], False,
                                               [0, 0], 1)
                dx, dkernel, dbias = torch.ops.aten.convolution_backward(
                    t["dy"], t["x"], t["kernel"], [s["cout"]], stride, pad, [1, 1], False, [0, 0], 1,
                    [not s["stem"], True, True])
                total += float(y[0, 0, 0, 0]) + float(dkernel[0, 0, 0, 0]) + float(dbias[0])
                if dx is not None:
                    total += float(dx[0, 0, 0, 0])
        return total

    return step


def time_steps(step, steps, warmup=3):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _side_main(args):
    """One framework's process: build once, then one round of `--steps` timed steps per line read on stdin."""
    specs = json.loads(Path(args.specs).read_text())
    if args.side == "tf":
        sys.path.insert(0, str(REPO))
        from tfcnn import config as tfcnn_config
        from tfcnn import hardware
        from tfcnn.train import configure_runtime

        if args.onednn_verbose:  # one op at a time, so each primitive's time is its own
            import tensorflow as tf

            tf.config.threading.set_inter_op_parallelism_threads(1)
        # float32 policy: the tensors already have the step's type, no graph pass should rewrite them
        configure_runtime(tfcnn_config.Config(arch="resnet", dataset="cifar10", mixed_precision="float32"))
        step = tf_step(specs, args.precision, in_order=args.in_order)
        info = {"matmul_peak_gflops": hardware.matmul_peak(args.precision)[0]}
    else:
        import torch

        step = torch_step(specs, args.precision)
        info = {"torch": torch.__version__}
    time_steps(step, 2)
    print(json.dumps(info), flush=True)
    for _ in sys.stdin:
        print(json.dumps({"median_s": time_steps(step, args.steps, warmup=1)}), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stack-n", type=int, default=5, help="ResNet blocks per stage (5 = ResNet-32). Default 5.")
    ap.add_argument("--batch-size", type=int, default=128, help="Images per step. Default 128.")
    ap.add_argument("--precision", choices=("float32", "bfloat16"), default="bfloat16",
                    help="Tensor type of the convolutions. Default bfloat16.")
    ap.add_argument("--steps", type=int, default=10, help="Timed steps per round. Default 10.")
    ap.add_argument("--rounds", type=int, default=5, help="Rounds, alternating the frameworks. Default 5.")
    ap.add_argument("--torch-python", default=str(REPO / ".venv-torch" / "bin" / "python"),
                    help="Interpreter with PyTorch (benchmarks/requirements-torch.txt); '' skips PyTorch.")
    ap.add_argument("--in-order", action="store_true",
                    help="also time TF with each layer's convolutions waiting for the previous layer's, "
                         "as a real step's dependencies order them (a third, interleaved side)")
    ap.add_argument("--onednn-verbose", action="store_true",
                    help="compare oneDNN's own time per primitive (ONEDNN_VERBOSE=1) between the sides, TF running "
                         "one op at a time; adds a table per convolution and direction")
    ap.add_argument("--side", choices=("tf", "torch"), help=argparse.SUPPRESS)
    ap.add_argument("--specs", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.side:
        return _side_main(args)

    sys.path.insert(0, str(REPO))
    from tfcnn import hardware

    specs = conv_specs(args.stack_n, args.batch_size)
    spec_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"conv_ceiling_specs_{os.getpid()}.json"
    spec_file.write_text(json.dumps(specs))
    side_args = ["--specs", str(spec_file), "--precision", args.precision, "--steps", str(args.steps)]
    side_args += ["--onednn-verbose"] if args.onednn_verbose else []
    sides = {"tfcnn (TensorFlow)": [sys.executable, __file__, "--side", "tf", *side_args]}
    if args.in_order:
        sides["tfcnn (TensorFlow), layers in order"] = [sys.executable, __file__, "--side", "tf", "--in-order",
                                                        *side_args]
    if args.torch_python:
        if not Path(args.torch_python).exists():
            sys.exit(f"conv_ceiling: no PyTorch interpreter at {args.torch_python}; create .venv-torch "
                     "(benchmarks/requirements-torch.txt) or pass --torch-python ''.")
        sides["PyTorch channels_last"] = [args.torch_python, __file__, "--side", "torch", *side_args]

    load_before = hardware.load_average()
    procs, info = {}, {}
    verbose = {name: [] for name in sides}  # oneDNN's lines, per side
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **({"ONEDNN_VERBOSE": "1"} if args.onednn_verbose else {})}
    for name, cmd in sides.items():
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        started = _read_json(proc, verbose[name])
        if started is None:
            sys.exit(f"conv_ceiling: the {name} side failed to start (its error is above)")
        verbose[name] = [line for line in verbose[name] if ",info," in line]  # keep the version, drop warm-up
        procs[name] = proc
        info.update(started)
    medians = {name: [] for name in procs}
    for r in range(args.rounds):
        order = list(procs) if r % 2 == 0 else list(reversed(procs))
        for name in order:
            procs[name].stdin.write("go\n")
            procs[name].stdin.flush()
            medians[name].append(_read_json(procs[name], verbose[name])["median_s"])
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()
    spec_file.unlink()

    flops = training_flops(specs) * args.batch_size
    peak = info["matmul_peak_gflops"]
    print(f"{hardware.describe_cpu(hardware.cpu_info())}; load average {load_before} -> {hardware.load_average()}")
    print(f"TensorFlow matmul peak, {args.precision}: {peak:.1f} GFLOP/s"
          + (f"; PyTorch {info['torch']}" if "torch" in info else ""))
    print(f"ResNet-{6 * args.stack_n + 2}, batch {args.batch_size}, {args.precision}: {len(specs)} convolutions, "
          f"{flops / 1e9:.1f} GFLOP of convolution work per training step "
          f"({sum(s['flops'] for s in specs) / 1e6:.1f} MFLOP forward per image)")
    print(f"{args.rounds} rounds of {args.steps} steps, alternating; median of the round medians:")
    print("| convolution-only step | ms per step | bound on training images/s | conv GFLOP/s | of peak | rounds (ms) |")
    print("|---|---:|---:|---:|---:|---|")
    for name, values in medians.items():
        ms = statistics.median(values) * 1000
        gflops = flops / ms / 1e6
        print(f"| {name} | {ms:.1f} | {args.batch_size / ms * 1000:.1f} | {gflops:.1f} | {gflops / peak:.1%} | "
              f"{', '.join(f'{v * 1000:.1f}' for v in values)} |")

    if args.onednn_verbose:
        print("(--onednn-verbose: the TF side ran one op at a time and both sides logged every primitive, so the "
              "step times above are not the ceiling; run without it for that)")
        print_onednn_times(verbose, args.rounds * (args.steps + 1))


def _read_json(proc, sink):
    """The side's next JSON line; other lines (oneDNN's verbose output) go to `sink`. None at end of output."""
    for line in proc.stdout:
        if line.startswith("{"):
            return json.loads(line)
        sink.append(line.strip())
    return None


def print_onednn_times(verbose, steps):
    """oneDNN's execution time per convolution and direction, per step, side by side (same shapes, same order)."""
    times = {}
    for name, lines in verbose.items():
        for line in lines:
            if ",info,oneDNN" in line or ",info,cpu,runtime" in line:
                print(f"{name}: {line.split(',info,', 1)[1]}")
            fields = line.split(",")
            if len(fields) > 8 and fields[3] == "exec" and fields[5] == "convolution":
                # direction, problem; padding left out: TF's SAME pads a stride-2 conv asymmetrically, PyTorch
                # symmetrically (padding=1), the same work
                key = (fields[7], re.sub(r"_?p[hw]\d+", "", fields[-2]))
                entry = times.setdefault(key, {}).setdefault(name, [fields[6], 0.0])
                entry[1] += float(fields[-1]) / steps
    names = list(verbose)
    print("oneDNN's time per step of each convolution primitive (ms), TF one op at a time:")
    print("| direction | problem | " + " | ".join(f"{n}: implementation | ms" for n in names) + " | ratio |")
    print("|---|---|" + "---|---:|" * len(names) + "---:|")
    totals = dict.fromkeys(names, 0.0)
    for (direction, problem), per_side in sorted(times.items(), key=lambda kv: kv[0]):
        cells, values = [], []
        for n in names:
            impl, ms = per_side.get(n, ["-", 0.0])
            cells += [impl, f"{ms:.2f}"]
            values.append(ms)
            totals[n] += ms
        ratio = f"{values[0] / values[-1]:.2f}" if len(values) > 1 and values[-1] else ""
        print(f"| {direction} | {problem} | " + " | ".join(cells) + f" | {ratio} |")
    print("| all | | " + " | ".join(f"| {totals[n]:.1f}" for n in names) + " | |")


if __name__ == "__main__":
    sys.exit(main())
