"""TensorBoard scalars of every epoch, written by the chief into the contract's TensorBoard folder.

SageMaker uploads that folder (`TensorBoardOutputConfig.LocalPath`, default /opt/ml/output/tensorboard) to S3
while the job runs, and the local backend keeps it in the chief's host folder, so `cloudtrain tensorboard` shows
the curves during training. One run per job: the folder itself, with a tag per metric (`loss`, `accuracy`,
`val_loss`, `val_accuracy`, `learning_rate`, `steps_per_second`) and the epoch (from 1, as the metric lines count)
as the step. Each epoch is flushed at once, so a sync sees it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from cloudtrain.runtime.env import TrainingEnv


class EpochSummaries:
    """A TensorBoard event file writer on the chief; does nothing on the other workers."""

    def __init__(self, env: TrainingEnv) -> None:
        self._writer: Any = None
        if env.is_chief:
            if importlib.util.find_spec("tensorboard") is None:  # tf.summary needs it; TF >= 2.21 leaves it out
                print("no TensorBoard event files: the `tensorboard` package is not installed here", flush=True)
                return
            import tensorflow as tf

            env.tensorboard_dir.mkdir(parents=True, exist_ok=True)
            self._writer = tf.summary.create_file_writer(str(env.tensorboard_dir))

    def write(self, epoch: int, scalars: Mapping[str, float | None]) -> None:
        """One point per scalar at step `epoch` (None values are left out), flushed to the file."""
        if self._writer is None:
            return
        import tensorflow as tf

        with self._writer.as_default():
            for name, value in scalars.items():
                if value is not None:
                    tf.summary.scalar(name, value, step=epoch)
        self._writer.flush()

    def __enter__(self) -> EpochSummaries:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._writer is not None:
            self._writer.close()


def learning_rate(optimizer: Any) -> float | None:
    """The optimizer's current learning rate: Keras 3 evaluates a schedule itself, tf_keras gives the schedule."""
    try:
        rate = optimizer.learning_rate
        if callable(rate) and hasattr(rate, "get_config"):  # a LearningRateSchedule (tf_keras)
            rate = rate(optimizer.iterations)
        return float(rate.numpy() if hasattr(rate, "numpy") else rate)
    except (AttributeError, TypeError, ValueError):
        return None
