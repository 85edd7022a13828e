"""tfcnn: the university CNN labs as a Keras 3 / TensorFlow 2 package."""
import os

__version__ = "0.1.0"


def _import_tensorflow_quietly():
    """Import TensorFlow with its native start-up chatter (oneDNN/CUDA notices written before
    absl logging is initialised, which TF_CPP_MIN_LOG_LEVEL does not silence) kept off stderr,
    so a CLI error stays one line. Set TFCNN_TF_LOGS=1 to see them."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get("TFCNN_TF_LOGS"):
        return
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # the CUDA probe logs here on CPU-only machines
    except Exception:
        pass  # a broken install is reported by the import that needs it, with stderr back
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_import_tensorflow_quietly()
