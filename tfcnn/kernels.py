"""Elementwise kernels that TensorFlow runs slowly as chains of ops, compiled by XLA into one loop each.

TF executes exact GELU, x * Phi(x), as ~5 elementwise ops forward and ~10 backward, each a pass over
memory (and erf in bfloat16 per element); XLA fuses each direction into one vectorised loop. The
rest of the graph stays on TF's oneDNN kernels: only these functions are compiled.
"""
import contextlib
import math

import tensorflow as tf

_compiled_inference = False


@contextlib.contextmanager
def compiled_inference():
    """Inference graphs traced inside use these kernels too (tfcnn.train's timed TTA pass); outside, inference
    and exports trace standard ops, which SavedModel, ONNX and TFLite take."""
    global _compiled_inference
    before, _compiled_inference = _compiled_inference, True
    try:
        yield
    finally:
        _compiled_inference = before


def compiled_inference_on():
    return _compiled_inference

_SQRT_HALF = 1 / math.sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


@tf.function(jit_compile=True, reduce_retracing=True)
def _gelu_forward(x):
    xf = tf.cast(x, tf.float32)
    return tf.cast(0.5 * xf * (1 + tf.math.erf(xf * _SQRT_HALF)), x.dtype)


@tf.function(jit_compile=True, reduce_retracing=True)
def _gelu_backward(x, dy):
    xf = tf.cast(x, tf.float32)
    cdf = 0.5 * (1 + tf.math.erf(xf * _SQRT_HALF))
    pdf = _INV_SQRT_2PI * tf.exp(-0.5 * xf * xf)
    return tf.cast(tf.cast(dy, tf.float32) * (cdf + xf * pdf), dy.dtype)


@tf.custom_gradient
def gelu(x):
    """Exact GELU with its exact gradient, each direction one XLA kernel (float32 math inside)."""
    def grad(dy):
        return _gelu_backward(x, dy)

    return _gelu_forward(x), grad
