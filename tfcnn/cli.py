"""The `tfcnn` console script: `tfcnn train ...` is `python -m tfcnn.train ...`, and so on.

    tfcnn --help                      # the commands, one line each
    tfcnn predict --model saved_models/lenet5-mnist/model.onnx digit.png
    tfcnn train --help

The dispatcher imports only the chosen module (no TensorFlow of its own, so `tfcnn --help` is
instant) and runs it exactly as `python -m` does, `__main__` block included: each command keeps its
own flags, messages and exit status (a user error is one line and exit 2).
"""
import runpy
import sys

from tfcnn import __version__, errors

# command: (module, what it does)
COMMANDS = {
    "train": ("tfcnn.train", "train one model from a config and/or flags; writes runs/NAME"),
    "evaluate": ("tfcnn.evaluate", "metrics, classification report and confusion matrix of a saved model"),
    "predict": ("tfcnn.predict", "classify image files with a SavedModel, .keras, .onnx or .tflite model"),
    "export": ("tfcnn.export", "write a model as SavedModel, .keras, ONNX or TFLite, checked against Keras"),
    "data": ("tfcnn.data", "find, download, describe and cache the datasets"),
    "models": ("tfcnn.models", "the model zoo: a model's summary, or the shipped pretrained models"),
    "pretrained": ("tfcnn.pretrained", "list and verify the trained models shipped in saved_models/"),
    "ship": ("tfcnn.ship", "add a finished run to saved_models/: ONNX, model card and checksums"),
    "experiments": ("tfcnn.experiments", "run a grid of configurations and compare them in one table"),
    "bench": ("tfcnn.bench", "training throughput (images/s) of the trainer vs synthetic data and PyTorch"),
    "launch": ("tfcnn.launch", "multi-worker training on this machine: N tfcnn.train workers"),
}


def usage():
    width = max(map(len, COMMANDS))
    lines = ["usage: tfcnn COMMAND [ARGS...]   (same as python -m tfcnn.COMMAND ARGS...)", "",
             "Train, compare, fine-tune and ship small CNNs (Keras 3 / TensorFlow 2).", "", "commands:"]
    lines += [f"  {name:{width}}  {about}" for name, (_, about) in COMMANDS.items()]
    lines += ["", "`tfcnn COMMAND --help` shows a command's flags."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        (sys.stdout if argv else sys.stderr).write(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"tfcnn {__version__}")
        return 0
    command, args = argv[0], argv[1:]
    if command not in COMMANDS:
        sys.stderr.write(f"tfcnn: error: unknown command {command!r}; choose one of {', '.join(COMMANDS)} "
                         "(see tfcnn --help)\n")
        return 2
    module = COMMANDS[command][0]
    # As `python -m`: the module runs as __main__ with sys.argv[1:] as its flags, so its own block
    # (run_cli, exit status, launch's SIGTERM handler) decides everything from here on.
    sys.argv = [f"tfcnn {command}", *args]
    errors.INVOKED_AS = f"tfcnn {command}"  # argparse's usage and errors name the command as typed
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
