"""cloudtrain: launch multi-worker TensorFlow training jobs on SageMaker, or locally under the same contract."""

__version__ = "0.1.0"
