"""tfcnn's own Keras layers: BatchNormalization on TensorFlow's fused kernel, and exact GELU on XLA kernels.

Both are registered with Keras (package "tfcnn"), so a saved model that uses them loads once this module is
imported (tfcnn.models imports it; models.load_model is the door for loading).
"""
import math

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="tfcnn")
class FusedBatchNormalization(layers.BatchNormalization):
    """BatchNormalization on TensorFlow's fused kernel (FusedBatchNormV3) for NHWC feature maps.

    Keras 3 computes batch norm as separate moment and elementwise ops (plus float32 casts under
    mixed precision), forward and backward; one fused kernel trains ResNet-32 faster, most of all in
    bfloat16, where oneDNN then runs the whole network in bfloat16 (docs/results/performance.md).
    Same weights, config and moving-average update as BatchNormalization; other inputs, masks,
    renorm and other backends fall back to it.
    """

    def call(self, inputs, training=None, mask=None):
        if (keras.backend.backend() != "tensorflow" or mask is not None or len(inputs.shape) != 4
                or self.axis not in (-1, 3) or getattr(self, "renorm", False) or self.synchronized):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf  # the TensorFlow backend only (checked above)

        channels = inputs.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels])
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels])
        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True)
            # The kernel returns the unbiased (n / (n - 1)) variance; Keras keeps the biased one.
            n = tf.cast(tf.size(inputs) // channels, tf.float32)
            variance = variance * (n - 1.0) / tf.maximum(n, 1.0)
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon, data_format="NHWC",
                is_training=False)
        return tf.cast(y, self.compute_dtype)


@keras.saving.register_keras_serializable(package="tfcnn")
class GELU(layers.Layer):
    """Exact GELU, x * Phi(x) (Hendrycks & Gimpel 2016), as PyTorch's nn.GELU().

    In training on TensorFlow it runs as one XLA-compiled kernel forward and one backward
    (tfcnn.kernels.gelu) instead of TF's chain of elementwise ops, which cost about half of the
    airbench94 step (docs/results/speedrun.md). Inference and exports compute the same function
    as 0.5 x (1 + erf(x / sqrt 2)) in standard ops, so SavedModel, ONNX and TFLite take it (TF's own gelu
    uses erfc, which tf2onnx cannot convert); tfcnn.kernels.compiled_inference opts a timed inference pass in.
    """

    def call(self, inputs, training=None):
        if keras.backend.backend() == "tensorflow":
            from tfcnn import kernels  # imports TensorFlow itself: only its backend needs it

            if training or kernels.compiled_inference_on():
                return kernels.gelu(inputs)
        return 0.5 * inputs * (1.0 + keras.ops.erf(inputs * math.sqrt(0.5)))
