"""Ablation of CPU speed settings: each variant vs tfcnn's default, rounds interleaved, ratios reported.

    .venv/bin/python benchmarks/ablation.py --arch resnet --stack-n 5 --steps 20 --rounds 3 \
        --variants default,tf_threads,inter1,onednn_off,keras_bf16,grappler_bf16,jit,spe4

Every measurement is a fresh child process (thread pools and oneDNN are process-wide), and the
rounds alternate the variants, so load from other processes hits them alike; --in-process
alternates variants that differ only in policy, grappler, XLA, compile or tf.data options inside
one process (the fairest side by side on a shared machine). Each child times the trainer's path (tfcnn.bench) on --source synthetic or pipeline data.
Prints, per variant, the median over rounds of images/s (timed window) and of the median-step rate
(steadier on a shared machine), each with its ratio to the first variant; --json for the record.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# name: (what it changes, settings). Keys: env (before TensorFlow starts), threads (intra, inter;
# 0 = TF's default), config (tfcnn Config fields), policy (a Keras policy set after configure_runtime), grappler (tf.config.optimizer experimental
# options), jit (tf.config.optimizer.set_jit), compile (model.compile options), data (tf.data.Options),
# keras_bn (Keras' own BatchNormalization instead of tfcnn's fused one, see _use_keras_batch_norm).
VARIANTS = {
    "default": ("tfcnn's configure_runtime as it stands", {}),
    "tf_threads": ("TF's default thread pools (no threading calls)", {"threads": (0, 0)}),
    "pinned": ("inter-op 2 / intra-op all cores (tfcnn's setting before the fused BatchNorm)",
               {"threads": (None, 2)}),
    "inter1": ("inter-op 1 / intra-op all cores", {"threads": (None, 1)}),
    "bf16_pinned": ("tfcnn bfloat16, inter-op 2 / intra-op all cores",
                    {"threads": (None, 2), "config": {"mixed_precision": "bfloat16"}}),
    "intra1": ("intra-op 1 / inter-op 2", {"threads": (1, 2)}),
    "onednn_off": ("TF_ENABLE_ONEDNN_OPTS=0 (Eigen kernels)", {"env": {"TF_ENABLE_ONEDNN_OPTS": "0"}}),
    "fpmath_bf16": ("TF_SET_ONEDNN_FPMATH_MODE=BF16 (float32 graph, oneDNN may compute in bfloat16)",
                    {"env": {"TF_SET_ONEDNN_FPMATH_MODE": "BF16"}, "config": {"mixed_precision": "float32"}}),
    "caller_thread": ("TF_ONEDNN_THREADPOOL_USE_CALLER_THREAD=1",
                      {"env": {"TF_ONEDNN_THREADPOOL_USE_CALLER_THREAD": "1"}}),
    "system_allocator": ("TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1", {"env": {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "1"}}),
    "bf16_system_allocator": ("tfcnn bfloat16 + TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1",
                              {"env": {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "1"},
                               "config": {"mixed_precision": "bfloat16"}}),
    "fp32": ("float32 policy (fused BatchNormalization)", {"config": {"mixed_precision": "float32"}}),
    "bf16": ("tfcnn --mixed-precision bfloat16", {"config": {"mixed_precision": "bfloat16"}}),
    "keras_bf16": ("keras mixed_bfloat16 policy, no grappler pass",
                   {"config": {"mixed_precision": "float32"}, "policy": "mixed_bfloat16",
                    "grappler": {"auto_mixed_precision_onednn_bfloat16": False}}),
    "grappler_bf16": ("grappler auto_mixed_precision_onednn_bfloat16, float32 policy",
                      {"config": {"mixed_precision": "float32"},
                       "grappler": {"auto_mixed_precision_onednn_bfloat16": True}}),
    "fp32_grappler_off": ("float32, oneDNN bf16 pass explicitly off",
                          {"config": {"mixed_precision": "float32"},
                           "grappler": {"auto_mixed_precision_onednn_bfloat16": False}}),
    "jit": ("model.compile(jit_compile=True)", {"compile": {"jit_compile": True}}),
    "xla_auto": ("tf.config.optimizer.set_jit('autoclustering')", {"jit": "autoclustering"}),
    "spe4": ("model.compile(steps_per_execution=4)", {"compile": {"steps_per_execution": 4}}),
    "spe16": ("model.compile(steps_per_execution=16)", {"compile": {"steps_per_execution": 16}}),
    "bf16_spe4": ("tfcnn bfloat16 + steps_per_execution=4",
                  {"config": {"mixed_precision": "bfloat16"}, "compile": {"steps_per_execution": 4}}),
    # Not a runtime setting: tfcnn's ResNet and MobileNetV2 use models.FusedBatchNormalization (TF's
    # FusedBatchNormV3 kernel); these put Keras 3's own BatchNormalization (moments plus ~10 separate
    # elementwise ops, forward and backward) back, to size what the fused layer wins.
    "keras_bn": ("Keras' own BatchNormalization, float32",
                 {"keras_bn": True, "config": {"mixed_precision": "float32"}}),
    "keras_bn_bf16": ("Keras' own BatchNormalization + tfcnn bfloat16",
                      {"keras_bn": True, "config": {"mixed_precision": "bfloat16"}}),
    "keras_bn_keras_bf16": ("Keras' own BatchNormalization + keras mixed_bfloat16 policy",
                            {"keras_bn": True, "config": {"mixed_precision": "float32"}, "policy": "mixed_bfloat16",
                             "grappler": {"auto_mixed_precision_onednn_bfloat16": False}}),
    "keras_bn_tf_threads": ("Keras' own BatchNormalization, float32, TF's default thread pools",
                            {"keras_bn": True, "threads": (0, 0), "config": {"mixed_precision": "float32"}}),
    # Peers, for a side by side in the same interleaved run (benchmarks/torch_peers.py in .venv-torch).
    "pytorch_cl": ("PyTorch 2.13 channels_last (torch_peers.py)", {"torch": ["--channels-last"]}),
    "pytorch_nchw": ("PyTorch 2.13 NCHW (torch_peers.py)", {"torch": []}),
    "no_augment": ("pipeline without augmentation", {"config": {"augment": False}}),
    "data_private_pool1": ("tf.data private threadpool of 1 thread", {"data": {"private_threadpool_size": 1}}),
    "data_max_intra1": ("tf.data max_intra_op_parallelism 1", {"data": {"max_intra_op_parallelism": 1}}),
}


def child(args):
    """Apply each variant in turn (rounds alternate), timing it through tfcnn.bench; one JSON line."""
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # as tfcnn does, before TensorFlow loads
    names = args.child.split(",")
    import tensorflow as tf

    first = VARIANTS[names[0]][1]
    intra, inter = first.get("threads", (None, None))
    if intra is not None or inter is not None:
        if intra is not None:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter is not None:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
        if intra is None:
            tf.config.threading.set_intra_op_parallelism_threads(os.cpu_count())
        tf.constant(0)  # start the runtime now: configure_runtime's own thread calls then keep these
    import keras

    from tfcnn import bench, pipelines

    opts = {"stack_n": args.stack_n} if args.stack_n else {}
    if args.width:
        opts["width"] = args.width
    original_train_epochs = pipelines.train_epochs
    base_config = {"mixed_precision": args.precision} if args.precision else {}  # a variant's own config wins
    rates = {n: [] for n in names}
    precisions = {}
    for _ in range(args.child_rounds):
        for name in names:
            settings = VARIANTS[name][1]
            tf.config.optimizer.set_jit(settings.get("jit", False))
            pipelines.train_epochs = original_train_epochs
            _use_keras_batch_norm(settings.get("keras_bn", False))
            if settings.get("data"):
                _patch_dataset_options(pipelines, settings["data"])
            session = bench.Session(args.arch, args.dataset, batch_size=args.batch_size, data_dir=args.data_dir,
                                     config_overrides={**base_config, **settings.get("config", {})} or None,
                                     compile_options=settings.get("compile"), **opts)
            # After configure_runtime (which sets the precision policy and the oneDNN bf16 pass itself):
            if "policy" in settings:
                keras.mixed_precision.set_global_policy(settings["policy"])
            if settings.get("grappler"):  # otherwise configure_runtime's choice stands
                tf.config.optimizer.set_experimental_options(settings["grappler"])
            window, median = session.run(args.source, args.steps)
            rates[name].append((round(window, 1), round(median, 1)))
            precisions[name] = session.precision
            print(f"  {name:24} {window:8.1f} img/s (median step {median:.1f})  load {os.getloadavg()[0]:.1f}",
                  file=sys.stderr, flush=True)
    print(json.dumps({"rates": rates, "precisions": precisions,
                      "intra": tf.config.threading.get_intra_op_parallelism_threads(),
                      "inter": tf.config.threading.get_inter_op_parallelism_threads()}))


def _use_keras_batch_norm(enable):
    """Make tfcnn's FusedBatchNormalization run Keras' own BatchNormalization.call, or restore it."""
    from keras import layers

    from tfcnn import models

    cls = models.FusedBatchNormalization
    fused = cls.__dict__.get("_ablation_fused_call", cls.call)
    cls._ablation_fused_call = fused
    cls.call = layers.BatchNormalization.call if enable else fused


def _patch_dataset_options(pipelines, values):
    """Wrap train_epochs so its dataset carries the given tf.data threading options."""
    import tensorflow as tf

    original = pipelines.train_epochs  # the unpatched function: child() restores it before each variant

    def train_epochs(*a, **k):
        options = tf.data.Options()
        for key, value in values.items():
            setattr(options.threading, key, value)
        return original(*a, **k).with_options(options)

    pipelines.train_epochs = train_epochs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="resnet")
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--stack-n", type=int, default=None)
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--source", choices=("synthetic", "pipeline"), default="synthetic")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--precision", choices=("float32", "bfloat16"),
                    help="precision of every variant that does not set its own (default: tfcnn's auto choice)")
    ap.add_argument("--variants", default="default,tf_threads,inter1")
    ap.add_argument("--data-dir", default=os.environ.get("TFCNN_DATA_DIR", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--in-process", action="store_true",
                    help="alternate all variants inside one process (only variants without env/threads settings)")
    ap.add_argument("--torch-python", default=str(REPO / ".venv-torch" / "bin" / "python"))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-rounds", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    common = ["--arch", args.arch, "--dataset", args.dataset, "--batch-size", str(args.batch_size),
              "--steps", str(args.steps), "--source", args.source, "--data-dir", args.data_dir]
    common += ["--stack-n", str(args.stack_n)] if args.stack_n else []
    common += ["--width", str(args.width)] if args.width else []
    common += ["--precision", args.precision] if args.precision else []
    rates = {n: [] for n in names}
    precisions = {}  # tfcnn variants: the precision their child ran
    loads = [os.getloadavg()[0]]
    if args.in_process:
        process_wide = [n for n in names if {"env", "threads", "torch"} & set(VARIANTS[n][1])]
        if process_wide:
            ap.error(f"--in-process cannot vary thread pools or environment: {process_wide}")
        plan = [(",".join(names), args.rounds)]
    else:
        plan = [(name, 1) for _ in range(args.rounds) for name in names]
    for spec, rounds in plan:
        settings = VARIANTS[spec.split(",")[0]][1]
        if "torch" in settings:
            cmd = [args.torch_python, str(REPO / "benchmarks" / "torch_peers.py"), "--arch", args.arch,
                   "--dataset", args.dataset, "--batch-size", str(args.batch_size), "--steps", str(args.steps),
                   *settings["torch"]]
            cmd += ["--stack-n", str(args.stack_n)] if args.stack_n else []
            cmd += ["--width", str(args.width)] if args.width else []
        else:
            cmd = [sys.executable, __file__, "--child", spec, "--child-rounds", str(rounds), *common]
        done = subprocess.run(cmd, env={**os.environ, **settings.get("env", {})}, cwd=REPO, stdout=subprocess.PIPE,
                              text=True)
        if done.returncode:
            print(f"{spec} failed (exit {done.returncode})", file=sys.stderr)
            continue
        out = json.loads(done.stdout.strip().splitlines()[-1])
        if "torch" in settings:
            out = {"rates": {spec: [(out["train_images_per_s"], out["median_step_images_per_s"])]}}
            print(f"  {spec:24} {out['rates'][spec][0][0]:8.1f} img/s (median step {out['rates'][spec][0][1]:.1f})"
                  f"  load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
        for name, values in out["rates"].items():
            rates[name] += values
        precisions.update(out.get("precisions", {}))
        loads.append(os.getloadavg()[0])
    rows = []
    for name in names:
        window = statistics.median(r[0] for r in rates[name]) if rates[name] else None
        median = statistics.median(r[1] for r in rates[name]) if rates[name] else None
        rows.append({"variant": name, "what": VARIANTS[name][0], "precision": precisions.get(name),
                     "images_per_s": window,
                     "median_step_images_per_s": median, "runs": rates[name]})
    for row in rows:  # ratios to the first variant
        base = rows[0]
        for key, out in (("images_per_s", "ratio"), ("median_step_images_per_s", "median_step_ratio")):
            row[out] = round(row[key] / base[key], 3) if row[key] and base[key] else None
    sys.path.insert(0, str(REPO))
    from tfcnn import hardware

    report = {"cpu": hardware.describe_cpu(hardware.cpu_info()),
              "args": {k: v for k, v in vars(args).items() if k not in ("child", "child_rounds")}, "rows": rows,
              "load_avg_1min_per_child": [round(x, 2) for x in loads], "cpu_count": os.cpu_count()}
    if args.json:
        print(json.dumps(report))
        return
    print(report["cpu"])
    print(f"{args.arch} {args.stack_n or ''} {args.dataset} {args.source}, batch {args.batch_size}, "
          f"{args.steps} steps x {args.rounds} rounds; 1-min load {report['load_avg_1min_per_child']}")
    print(f"{'variant':24} {'img/s':>8} {'ratio':>6} {'median-step':>11} {'ratio':>6}  what")
    for row in rows:
        if row["images_per_s"] is None:
            print(f"{row['variant']:24} failed")
            continue
        print(f"{row['variant']:24} {row['images_per_s']:8.1f} {row['ratio']:5.2f}x "
              f"{row['median_step_images_per_s']:11.1f} {row['median_step_ratio']:5.2f}x  {row['what']}")


if __name__ == "__main__":
    main()
