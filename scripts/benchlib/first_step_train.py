"""job_specs/digits/train.py with timestamps, for the bench's `first-step` row.

Same model, data and runtime calls as the digits example, one epoch, no model save. It prints
`bench-mark NAME t=EPOCH` when the script starts, once TensorFlow is imported, once the strategy exists and
(from inside the compiled training step, through a py_function in the loss) when the first step runs; the
runtime's own "training N epoch(s)" line comes after its first collective, so the cluster is up by then.
The bench reads the job's log timestamps of these lines.
"""

from __future__ import annotations

import time


def mark(name: str) -> None:
    print(f"bench-mark {name} t={time.time():.3f}", flush=True)


mark("script-start")

import argparse  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from cloudtrain.runtime import TrainingEnv, fit, make_strategy, report_failures  # noqa: E402


def load(folder: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(f"{folder}/digits.npz") as data:
        return data["x"].astype(np.float32), data["y"].astype(np.int64)


def main() -> None:
    env = TrainingEnv.from_environ()
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=0.002)
    args, _ = parser.parse_known_args()

    import tensorflow as tf

    mark("tf-imported")
    strategy = make_strategy(env)
    mark("strategy-created")
    tf.keras.utils.set_random_seed(0)
    with strategy.scope():
        model = tf.keras.Sequential(
            [
                tf.keras.Input(shape=(8, 8), name="pixels"),
                tf.keras.layers.Flatten(),
                tf.keras.layers.Dense(128, activation="relu"),
                tf.keras.layers.Dense(10),
            ]
        )
        optimizer = tf.keras.optimizers.Adam(args.learning_rate)
    marked: set[str] = set()

    def once(name: str) -> np.int64:
        if name not in marked:
            marked.add(name)
            mark(name)
        return np.int64(0)

    def loss(y: Any, scores: Any) -> Any:
        once("first-trace")  # Python: runs while the training step is being traced
        ran = tf.py_function(lambda: once("first-step"), [], tf.int64)  # runs when the step executes
        with tf.control_dependencies([ran]):
            return tf.identity(tf.keras.losses.sparse_categorical_crossentropy(y, scores, from_logits=True))

    fit(
        model,
        optimizer,
        loss,
        train=load(env.channel("train")),
        eval=load(env.channel("eval")),
        epochs=args.epochs,
        global_batch_size=args.batch_size,
        env=env,
        strategy=strategy,
    )
    mark("fit-done")


if __name__ == "__main__":
    with report_failures():
        main()
