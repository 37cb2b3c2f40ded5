"""Classify scikit-learn's 8x8 digits with a small MLP, on one worker or many (MultiWorkerMirroredStrategy).

Reads the `train` and `eval` channels (digits.npz from scripts/prepare-data); takes --epochs, --batch_size
(global) and --learning_rate as arguments (script mode) or from SM_HPS. Writes the model to model_dir and the
evaluation report to output_data_dir; a restarted job resumes from its last checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cloudtrain.runtime import TrainingEnv, fit, make_strategy, report_failures, save_model, write_report


def load(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every .npz file in the channel (digits.npz, or shards of it: with `distribution: sharded` each host has
    only some), in name order."""
    xs, ys = [], []
    for path in sorted(Path(folder).glob("*.npz")):
        with np.load(path) as data:
            xs.append(data["x"].astype(np.float32))
            ys.append(data["y"].astype(np.int64))
    if not xs:
        raise FileNotFoundError(f"no .npz files in {folder}")
    return np.concatenate(xs), np.concatenate(ys)


def main() -> None:
    env = TrainingEnv.from_environ()
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=env.hp("epochs", 12))
    parser.add_argument("--batch_size", type=int, default=env.hp("batch_size", 64))
    parser.add_argument("--learning_rate", type=float, default=env.hp("learning_rate", 0.002))
    args, _ = parser.parse_known_args()  # SageMaker may add arguments of its own (say, --model_dir)

    strategy = make_strategy(env)  # before any other TensorFlow work
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    with strategy.scope():
        model = tf.keras.Sequential(
            [
                tf.keras.Input(shape=(8, 8), name="pixels"),  # the SavedModel's input name
                tf.keras.layers.Flatten(),
                tf.keras.layers.Dense(128, activation="relu"),
                tf.keras.layers.Dense(10),  # logits
            ]
        )
        optimizer = tf.keras.optimizers.Adam(args.learning_rate)

    result = fit(
        model,
        optimizer,
        tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        train=load(env.channel("train")),
        eval=load(env.channel("eval")),
        epochs=args.epochs,
        global_batch_size=args.batch_size,
        env=env,
        strategy=strategy,
    )
    save_model(model, env)  # on every worker: the others save to a temporary folder
    write_report(result, env, class_names=[str(d) for d in range(10)])


if __name__ == "__main__":
    with report_failures():
        main()
