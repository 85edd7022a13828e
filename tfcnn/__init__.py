"""tfcnn: the university CNN labs as a Keras 3 / TensorFlow 2 package.

`import tfcnn` is light: it imports no TensorFlow, so the `tfcnn` dispatcher, `--help` and predict
on an ONNX or TFLite file start in a fraction of a second. Submodules load on first use
(`tfcnn.data` after `import tfcnn` works), and TensorFlow, whenever something first imports it
(directly or through Keras), starts with its native notices kept off stderr.
"""
import importlib
import importlib.abc
import importlib.util
import os
import pkgutil
import sys

from tfcnn.errors import native_stderr_off

__version__ = "0.1.0"


def __getattr__(name):
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *(m.name for m in pkgutil.iter_modules(__path__))})


def _probe_devices(tf):
    try:
        tf.config.list_physical_devices("GPU")  # the CUDA probe logs here on CPU-only machines
    except Exception:
        pass  # a broken install is reported by the code that needs it, with stderr back


class _QuietLoader(importlib.abc.Loader):
    """TensorFlow's own loader, run with fd 2 off, followed by the device probe (still off)."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with native_stderr_off():
            self.loader.exec_module(module)
            _probe_devices(module)
        module.__loader__ = module.__spec__.loader = self.loader


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Until TensorFlow is imported, hand its spec out with `_QuietLoader`; then step aside. An import
    hook rather than an eager import, so that only the code that needs TensorFlow pays for it."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        for finder in sys.meta_path:
            spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


def _quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get("TFCNN_TF_LOGS"):  # TFCNN_TF_LOGS=1 shows the notices
        return
    if "tensorflow" in sys.modules:  # imported before tfcnn: only the probe is left to keep quiet
        with native_stderr_off():
            _probe_devices(sys.modules["tensorflow"])
    elif not any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())


_quiet_tensorflow()
