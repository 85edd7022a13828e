"""tfcnn: the university CNN labs as a Keras 3 / TensorFlow 2 package."""

__version__ = "0.1.0"
