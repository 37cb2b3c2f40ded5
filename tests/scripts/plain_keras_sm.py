"""A script-mode training script as SageMaker's TensorFlow documentation shows them; nothing of cloudtrain.

Hyperparameters arrive as `--name value` arguments (a strict `parse_args`, so `--model_dir` must be accepted),
channels and the model folder as SM_* variables. MultiWorkerMirroredStrategy with plain Keras `compile` + `fit`;
every worker evaluates and saves (each takes part in every collective), the chief into SM_MODEL_DIR, the others
into a temporary folder.
"""

import argparse
import json
import os
import tempfile

import numpy as np
import tensorflow as tf


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=0.002)
    parser.add_argument("--model_dir", type=str)  # S3 on SageMaker: where TensorFlow may write checkpoints
    parser.add_argument("--sm-model-dir", type=str, default=os.environ.get("SM_MODEL_DIR"))
    parser.add_argument("--train", type=str, default=os.environ.get("SM_CHANNEL_TRAIN"))
    parser.add_argument("--eval", type=str, default=os.environ.get("SM_CHANNEL_EVAL"))
    parser.add_argument("--hosts", type=json.loads, default=os.environ.get("SM_HOSTS"))
    parser.add_argument("--current-host", type=str, default=os.environ.get("SM_CURRENT_HOST"))
    return parser.parse_args()


def load(folder):
    with np.load(os.path.join(folder, "digits.npz")) as data:
        return data["x"].reshape(-1, 64), data["y"]


def dataset(x, y, batch_size, shuffle):
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=0).repeat()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.batch(batch_size).with_options(options)


def main():
    args = parse_args()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    x_train, y_train = load(args.train)
    x_eval, y_eval = load(args.eval)

    with strategy.scope():
        model = tf.keras.Sequential(
            [
                tf.keras.Input(shape=(64,)),
                tf.keras.layers.Dense(128, activation="relu"),
                tf.keras.layers.Dense(10),
            ]
        )
        model.compile(
            optimizer=tf.keras.optimizers.Adam(args.learning_rate),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
    steps = len(x_train) // args.batch_size
    model.fit(dataset(x_train, y_train, args.batch_size, True), epochs=args.epochs, steps_per_epoch=steps, verbose=2)
    loss, accuracy = model.evaluate(dataset(x_eval, y_eval, args.batch_size, False), verbose=0)

    resolver = strategy.cluster_resolver
    chief = resolver.task_type in (None, "chief") or (resolver.task_type == "worker" and resolver.task_id == 0)
    if chief:
        print(f"eval_loss={loss:.4f} eval_accuracy={accuracy:.4f} hosts={len(args.hosts)}", flush=True)
    target = os.path.join(args.sm_model_dir if chief else tempfile.mkdtemp(), "000000001")
    model.save(target)  # a SavedModel, for TensorFlow Serving


if __name__ == "__main__":
    main()
