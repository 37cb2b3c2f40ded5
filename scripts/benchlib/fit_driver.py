"""Train job_specs/digits' model one way, in a fresh process, and print how fast (one JSON line).

    python fit_driver.py keras|keras-spe|keras-mwms|runtime|runtime-mwms --data DIR --epochs N

- keras: plain `model.compile` + `model.fit` (no strategy), validating every epoch as the runtime does;
- keras-spe: the same with `steps_per_execution` at an epoch's steps: Keras compiles a whole epoch into one
  function call, as cloudtrain.runtime's loop does (the fair baseline: the same compilation on both sides);
- keras-mwms: the same `model.fit` as a plain-Keras script runs under cloudtrain on several instances: in a
  MultiWorkerMirroredStrategy (one worker here) with tf-keras (TF_USE_LEGACY_KERAS=1, `distribution.keras: auto`);
- runtime: cloudtrain.runtime's `fit` with no strategy (the training loop alone);
- runtime-mwms: cloudtrain.runtime's `fit` under MultiWorkerMirroredStrategy with one worker, which is what a
  one-instance job of job_specs/digits.yaml runs (its strategy is multi_worker_mirrored, so the launcher
  sets a one-worker TF_CONFIG).

Same model (Flatten, Dense 128 relu, Dense 10), data, seed, batch size 64 and Adam(0.002) as digits/train.py.
Timed: the `fit` call only (not the TensorFlow import or the data loading), and the end of every epoch, seen the
same way from outside for both: Keras's `on_epoch_end` (after validation) and the runtime's epoch line (after
evaluation). The time between two epoch ends is a whole epoch of either: training, evaluation and, for the
runtime, the previous epoch's checkpoint.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BATCH = 64
LEARNING_RATE = 0.002


def _load(folder: Path) -> tuple[Any, Any]:
    import numpy as np

    with np.load(folder / "digits.npz") as data:
        return data["x"].astype(np.float32), data["y"].astype(np.int64)


def _model(tf: Any) -> Any:
    return tf.keras.Sequential(
        [
            tf.keras.Input(shape=(8, 8), name="pixels"),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(128, activation="relu"),
            tf.keras.layers.Dense(10),
        ]
    )


def keras_fit(
    train: tuple[Any, Any], evaluation: tuple[Any, Any], epochs: int, mwms: bool = False, per_epoch: bool = False
) -> dict[str, Any]:
    import math

    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy() if mwms else tf.distribute.get_strategy()
    tf.keras.utils.set_random_seed(0)
    with strategy.scope():
        model = _model(tf)
        model.compile(
            optimizer=tf.keras.optimizers.Adam(LEARNING_RATE),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            steps_per_execution=math.ceil(len(train[1]) / BATCH) if per_epoch else 1,
        )
    ends: list[float] = []

    class Timer(tf.keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:  # after validation
            ends.append(time.perf_counter())

    began = time.perf_counter()
    history = model.fit(
        *train,
        batch_size=BATCH,
        epochs=epochs,
        validation_data=evaluation,
        shuffle=True,
        verbose=0,
        callbacks=[Timer()],
    )
    wall = time.perf_counter() - began
    return {"fit_s": wall, "epoch_ends": [t - began for t in ends], "val_accuracy": history.history["val_accuracy"][-1]}


def runtime_fit(train: tuple[Any, Any], evaluation: tuple[Any, Any], epochs: int, kind: str) -> dict[str, Any]:
    from cloudtrain.runtime import TrainingEnv, fit, make_strategy

    env = TrainingEnv.from_environ()
    strategy = make_strategy(env, kind=kind)
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    with strategy.scope():
        model = _model(tf)
        optimizer = tf.keras.optimizers.Adam(LEARNING_RATE)
    ends: list[float] = []
    sys.stdout = _EpochLines(sys.stdout, ends)  # the chief prints "epoch=N ..." once an epoch is evaluated
    began = time.perf_counter()
    result = fit(
        model,
        optimizer,
        tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        train=train,
        eval=evaluation,
        epochs=epochs,
        global_batch_size=BATCH,
        env=env,
        strategy=strategy,
    )
    wall = time.perf_counter() - began
    sys.stdout = sys.__stdout__
    return {"fit_s": wall, "epoch_ends": [t - began for t in ends], "val_accuracy": result.val_accuracy}


class _EpochLines:
    """stdout that notes when each `epoch=` line is written."""

    def __init__(self, out: Any, ends: list[float]) -> None:
        self.out, self.ends = out, ends

    def write(self, text: str) -> int:
        if text.startswith("epoch="):
            self.ends.append(time.perf_counter())
        return int(self.out.write(text))

    def flush(self) -> None:
        self.out.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.out, name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("keras", "keras-spe", "keras-mwms", "runtime", "runtime-mwms"))
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fit-") as root:
        out = _train(args, Path(root))
    sys.stdout.write(json.dumps(out) + "\n")


def _train(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    os.environ["CLOUDTRAIN_OPT_ML"] = str(root)  # model, output and checkpoints of the runtime go here
    os.environ["CLOUDTRAIN_CHECKPOINT_DIR"] = str(root / "checkpoints")
    if args.mode == "keras-mwms":
        os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before TensorFlow is imported, as cloudtrain sets it
    if args.mode in ("runtime-mwms", "keras-mwms"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        from cloudtrain.runtime.env import build_tf_config

        os.environ["TF_CONFIG"] = json.dumps(build_tf_config(["algo-1"], "algo-1", {"algo-1": f"127.0.0.1:{port}"}))
    train, evaluation = _load(args.data / "train"), _load(args.data / "eval")
    if args.mode in ("keras", "keras-spe", "keras-mwms"):
        out = keras_fit(
            train, evaluation, args.epochs, mwms=args.mode == "keras-mwms", per_epoch=args.mode == "keras-spe"
        )
    else:
        kind = "multi_worker_mirrored" if args.mode == "runtime-mwms" else "none"
        out = runtime_fit(train, evaluation, args.epochs, kind)
    ends = out["epoch_ends"]
    if len(ends) != args.epochs:
        raise RuntimeError(f"saw {len(ends)} epoch ends for {args.epochs} epochs")
    cycles = [b - a for a, b in itertools.pairwise(ends)] or ends
    examples = len(train[1])
    out.update(
        mode=args.mode,
        epochs=args.epochs,
        examples=examples,
        examples_per_s=examples * args.epochs / out["fit_s"],
        first_epoch_s=ends[0],
        epoch_cycles_s=cycles,
        steady_examples_per_s=examples / statistics.median(cycles),
    )
    return out


if __name__ == "__main__":
    main()
