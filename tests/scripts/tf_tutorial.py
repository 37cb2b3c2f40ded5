"""TensorFlow's "Multi-worker training with Keras" tutorial, with sklearn's digits instead of MNIST; nothing of
cloudtrain and no arguments read.

It reads TF_CONFIG for the number of workers, scales the batch by it, trains with `steps_per_epoch` on a repeated
dataset, and saves on every worker: the chief to the model folder, the others to a temporary one deleted after.
"""

import json
import os

import numpy as np
import tensorflow as tf

per_worker_batch_size = 32
tf_config = json.loads(os.environ["TF_CONFIG"])
num_workers = len(tf_config["cluster"]["worker"])


def digits_dataset(batch_size):
    with np.load(os.path.join(os.environ.get("SM_CHANNEL_TRAIN", "data"), "digits.npz")) as data:
        x, y = data["x"], data["y"]
    return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x)).repeat().batch(batch_size)


def build_and_compile_model():
    model = tf.keras.Sequential(
        [
            tf.keras.layers.InputLayer(input_shape=(8, 8)),
            tf.keras.layers.Reshape(target_shape=(8, 8, 1)),
            tf.keras.layers.Conv2D(16, 3, activation="relu"),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(64, activation="relu"),
            tf.keras.layers.Dense(10),
        ]
    )
    model.compile(
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        optimizer=tf.keras.optimizers.SGD(learning_rate=0.05),
        metrics=["accuracy"],
    )
    return model


strategy = tf.distribute.MultiWorkerMirroredStrategy()
global_batch_size = per_worker_batch_size * num_workers
multi_worker_dataset = digits_dataset(global_batch_size)

with strategy.scope():
    multi_worker_model = build_and_compile_model()

history = multi_worker_model.fit(multi_worker_dataset, epochs=8, steps_per_epoch=40, verbose=2)


def _is_chief(task_type, task_id):
    return task_type == "chief" or (task_type == "worker" and task_id == 0) or task_type is None


def _get_temp_dir(dirpath, task_id):
    base_dirpath = "workertemp_" + str(task_id)
    temp_dir = os.path.join(dirpath, base_dirpath)
    tf.io.gfile.makedirs(temp_dir)
    return temp_dir


def write_filepath(filepath, task_type, task_id):
    dirpath = os.path.dirname(filepath)
    base = os.path.basename(filepath)
    if not _is_chief(task_type, task_id):
        dirpath = _get_temp_dir(dirpath, task_id)
    return os.path.join(dirpath, base)


model_path = os.path.join(os.environ.get("SM_MODEL_DIR", "/tmp"), "keras-model")
task_type, task_id = strategy.cluster_resolver.task_type, strategy.cluster_resolver.task_id
write_model_path = write_filepath(model_path, task_type, task_id)
multi_worker_model.save(write_model_path)
if not _is_chief(task_type, task_id):
    tf.io.gfile.rmtree(os.path.dirname(write_model_path))
else:
    print(f"final accuracy={history.history['accuracy'][-1]:.4f} workers={num_workers}", flush=True)
