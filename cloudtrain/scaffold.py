"""`cloudtrain init`: a job spec, two training scripts and a small data set that run as they are.

Both scripts train the same small classifier on CSV files, one folder per data channel: `train.py` with
`cloudtrain.runtime` (its own distributed loop, evaluation report and checkpoints), `train_keras.py` with plain
Keras `model.fit` and nothing of cloudtrain, as a SageMaker script-mode script is written. The data is a
synthetic set of labelled clusters written here, so there is nothing to download.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from cloudtrain.errors import UserError
from cloudtrain.files import writing_to

DEFAULT_NAME = "my-training-job"
SPEC_FILE = "job.yaml"
CENTRES = ((0.0, 0.0, 0.0, 0.0), (3.0, 3.0, 0.0, 0.0), (0.0, 3.0, 3.0, 0.0))  # one cluster per class
TRAIN_ROWS = 600
EVAL_ROWS = 150

SPEC = """\
# A cloudtrain job spec, written by `cloudtrain init`. Paths are relative to this file; every field
# left out has a default, and a misspelled field is an error. `cloudtrain schema` prints them all.
#
#   cloudtrain validate {spec}                       check it
#   cloudtrain submit {spec} --backend local --wait  train on this machine (same contract as SageMaker)
#   cloudtrain fetch-model JOB                       download the model and the evaluation report

name: {name}

code:
  source_dir: code         # shipped to every instance
  entry_point: train.py    # run as `python train.py --epochs 5 --batch_size 64 --learning_rate 0.01 --model_dir ...`
  # entry_point: train_keras.py   # the same with plain Keras model.fit, no cloudtrain import
  # requirements: requirements.txt   # pip-installed first (AWS's TensorFlow image has numpy already)

resources:
  instance_type: ml.m5.large   # CPU is plenty for this model; ml.g5.xlarge for a GPU
  instance_count: 2            # workers, with MultiWorkerMirroredStrategy; TF_CONFIG is set up for you
  max_runtime: 30m

distribution:
  strategy: multi_worker_mirrored
  keras: auto   # tf-keras where model.fit needs it (MWMS on 2+ instances), not for cloudtrain.runtime

# Each channel is a local folder (uploaded to S3 on SageMaker) or an s3:// URI; the script reads
# channel NAME from $SM_CHANNEL_NAME. Put your own CSV files here (the label in the last column).
data:
  train: data/train
  eval: data/eval

# Extra environment variables for the script (values are strings: quote numbers):
# environment:
#   MY_SETTING: "value"

hyperparameters:
  epochs: 5
  batch_size: 64        # global: split across all workers
  learning_rate: 0.01

# Read from the chief's per-epoch lines (`epoch=3 loss=0.1234 accuracy=0.9500 val_loss=... val_accuracy=...`),
# anchored on `epoch=`: the final "eval report: accuracy=..." line is not an epoch's.
metrics:
  - name: loss
    regex: 'epoch=\\d+ loss=([0-9.eE+-]+)'
  - name: accuracy
    regex: 'epoch=\\d+ loss=\\S+ accuracy=([0-9.eE+-]+)'
  - name: val_loss
    regex: 'epoch=\\d+ .* val_loss=([0-9.eE+-]+)'
  - name: val_accuracy
    regex: 'epoch=\\d+ .* val_accuracy=([0-9.eE+-]+)'

# A hyperparameter sweep (docs/sweeps.md): `cloudtrain submit` then runs trials of this job with values chosen
# for you, a SageMaker tuning job or, locally, real trials chosen by Optuna. Uncomment to try it.
# sweep:
#   objective: {{metric: val_accuracy, goal: maximize}}   # one of the metrics above
#   strategy: bayesian        # bayesian | random | grid (values only) | hyperband (needs epochs above)
#   parameters:
#     learning_rate: {{min: 0.001, max: 0.1, scale: log}}  # scale: auto | linear | log | reverse_log
#     batch_size: {{values: [32, 64, 128]}}                # categorical
#   max_trials: 4
#   max_parallel: 2           # trials at once, each with instance_count workers
#   early_stopping: auto      # off | auto: stop trials below the median, as SageMaker's Auto
#   max_cost: 5               # USD: SageMaker's tuning job cannot spend more (on-demand prices)
#   seed: 7
"""

TRAIN = '''\
"""Train a small classifier on the CSV files of the `train` and `eval` channels, on one worker or many.

Written by `cloudtrain init`, with a synthetic data set (labelled clusters) in data/. Bring your own data in
the same layout (CSV files with a header row, numeric features, an integer label 0..N-1 in the last column)
and change the model as you like. `cloudtrain.runtime` reads the SageMaker environment, so the script runs
unchanged on the local backend and on SageMaker; it ships inside the code tarball, nothing to install.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cloudtrain.runtime import TrainingEnv, fit, make_strategy, report_failures, save_model, write_report


def load(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every *.csv in the folder: features, then the label in the last column."""
    files = sorted(Path(folder).glob("*.csv"))
    if not files:
        raise FileNotFoundError(f"no .csv files in {folder}")
    rows = np.concatenate([np.loadtxt(f, delimiter=",", skiprows=1, ndmin=2) for f in files])
    return rows[:, :-1].astype(np.float32), rows[:, -1].astype(np.int64)


def main() -> None:
    env = TrainingEnv.from_environ()  # hosts, channels, hyperparameters, output folders, TF_CONFIG
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=env.hp("epochs", 5))
    parser.add_argument("--batch_size", type=int, default=env.hp("batch_size", 64))
    parser.add_argument("--learning_rate", type=float, default=env.hp("learning_rate", 0.01))
    args, _ = parser.parse_known_args()  # SageMaker may add arguments of its own

    x, y = load(env.channel("train"))
    x_eval, y_eval = load(env.channel("eval"))
    classes = int(max(y.max(), y_eval.max())) + 1

    strategy = make_strategy(env)  # before any other TensorFlow work
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    with strategy.scope():
        model = tf.keras.Sequential(
            [
                tf.keras.Input(shape=(x.shape[1],), name="features"),
                tf.keras.layers.Dense(32, activation="relu"),
                tf.keras.layers.Dense(classes),  # logits
            ]
        )
        optimizer = tf.keras.optimizers.Adam(args.learning_rate)

    # With `distribution: sharded` on the train channel each worker has only its share of the files: fit sees that
    # in the channel's config and reads each worker's own examples (tf.data AutoShardPolicy OFF), none twice.
    result = fit(
        model,
        optimizer,
        tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        train=(x, y),
        eval=(x_eval, y_eval),
        epochs=args.epochs,
        global_batch_size=args.batch_size,
        env=env,
        strategy=strategy,
    )
    # fit also wrote TensorBoard curves to env.tensorboard_dir (/opt/ml/output/tensorboard): `cloudtrain tensorboard
    # JOB` shows them, live. With Keras' own model.fit, write there with its callback instead:
    #   tf.keras.callbacks.TensorBoard(log_dir=os.path.join(os.environ["SM_OUTPUT_DIR"], "tensorboard"))
    save_model(model, env)  # every worker must call it; the chief's copy lands in the model folder
    write_report(result, env, class_names=[f"class {i}" for i in range(classes)])  # eval_report.json


if __name__ == "__main__":
    with report_failures():  # an error becomes the job's failure reason
        main()
'''


TRAIN_KERAS = '''\
"""The same classifier as train.py, with plain Keras `model.fit` and nothing of cloudtrain: a SageMaker
script-mode script as AWS's documentation writes them.

Hyperparameters arrive as `--name value` arguments (SageMaker adds `--model_dir`), channels and the model
folder as SM_* variables, TF_CONFIG for MultiWorkerMirroredStrategy. Under that strategy with more than one
worker, cloudtrain runs it with tf-keras (`distribution.keras: auto`), since Keras 3's `model.fit` fails there.
Every worker evaluates and saves (each takes part in every collective): the chief into SM_MODEL_DIR, the others
into a temporary folder.
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf


def load(folder):
    """Every *.csv in the folder: features, then the label in the last column."""
    files = sorted(Path(folder).glob("*.csv"))
    rows = np.concatenate([np.loadtxt(f, delimiter=",", skiprows=1, ndmin=2) for f in files])
    return rows[:, :-1].astype(np.float32), rows[:, -1].astype(np.int64)


def sharded(channel):
    """Whether the channel holds only this host's share of the files (`distribution: sharded` in the spec)."""
    config = json.loads(os.environ.get("SM_INPUT_DATA_CONFIG") or "{}").get(channel) or {}
    return config.get("S3DistributionType") == "ShardedByS3Key"


def batches(x, y, batch_size, train, channel):
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if train:
        ds = ds.shuffle(len(x), seed=0).repeat()
    options = tf.data.Options()
    # A sharded channel is this worker's share already: OFF (FILE or DATA would drop or repeat examples).
    # Otherwise the data is in memory on every worker: each takes its share of each batch (DATA).
    policy = "OFF" if sharded(channel) else "DATA"
    options.experimental_distribute.auto_shard_policy = getattr(tf.data.experimental.AutoShardPolicy, policy)
    return ds.batch(batch_size).with_options(options)


def steps_per_epoch(strategy, examples, batch_size, channel):
    """Every worker must run the same steps. With a sharded channel each has its own share: the smallest decides."""
    if not sharded(channel):
        return max(1, examples // batch_size)
    per_worker = max(1, batch_size // strategy.num_replicas_in_sync)
    local = tf.constant([examples // per_worker], tf.int64)
    return max(1, int(tf.reduce_min(strategy.gather(strategy.run(lambda: local), axis=0))))


class EpochLine(tf.keras.callbacks.Callback):
    """One line per epoch, which the spec's metric regexes read."""

    def on_epoch_end(self, epoch, logs=None):
        names = ("loss", "accuracy", "val_loss", "val_accuracy")
        print(f"epoch={epoch + 1} " + " ".join(f"{n}={logs[n]:.4f}" for n in names), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=64)  # global: split across all workers
    parser.add_argument("--learning_rate", type=float, default=0.01)
    parser.add_argument("--model_dir", type=str)  # SageMaker's S3 prefix for the job; the model goes to SM_MODEL_DIR
    args = parser.parse_args()

    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # one worker without TF_CONFIG
    x, y = load(os.environ["SM_CHANNEL_TRAIN"])
    x_eval, y_eval = load(os.environ["SM_CHANNEL_EVAL"])
    classes = int(max(y.max(), y_eval.max())) + 1
    tf.keras.utils.set_random_seed(0)
    with strategy.scope():
        model = tf.keras.Sequential(
            [
                tf.keras.Input(shape=(x.shape[1],)),
                tf.keras.layers.Dense(32, activation="relu"),
                tf.keras.layers.Dense(classes),  # logits
            ]
        )
        model.compile(
            optimizer=tf.keras.optimizers.Adam(args.learning_rate),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )

    resolver = strategy.cluster_resolver
    chief = resolver.task_type in (None, "chief") or (resolver.task_type == "worker" and resolver.task_id == 0)
    callbacks = [EpochLine()] if chief else []
    model.fit(
        batches(x, y, args.batch_size, train=True, channel="train"),
        epochs=args.epochs,
        steps_per_epoch=steps_per_epoch(strategy, len(x), args.batch_size, "train"),
        validation_data=batches(x_eval, y_eval, args.batch_size, train=False, channel="eval"),
        callbacks=callbacks,
        verbose=0,
    )
    folder = os.environ["SM_MODEL_DIR"] if chief else tempfile.mkdtemp()
    model.save(os.path.join(folder, "model.keras"))


if __name__ == "__main__":
    main()
'''


@dataclass(frozen=True)
class Scaffold:
    """What `init` wrote: the folder, the spec and every file."""

    folder: Path
    spec: Path
    name: str
    files: tuple[Path, ...]


def job_name(folder: Path, name: str | None) -> str:
    """The given name (checked), else one made from the folder's name."""
    from cloudtrain.spec.models import JOB_NAME_MAX, NAME_PATTERN

    if name is not None:
        if not re.match(NAME_PATTERN, name) or len(name) > JOB_NAME_MAX:
            raise UserError(
                f"--name {name!r}: use letters, digits and hyphens (at most {JOB_NAME_MAX}), "
                "starting and ending with a letter or digit"
            )
        return name
    made = re.sub(r"[^A-Za-z0-9]+", "-", folder.resolve().name).strip("-").lower()[:JOB_NAME_MAX].strip("-")
    return made or DEFAULT_NAME


def dataset(rows: int, seed: int) -> str:
    """CSV text of `rows` points scattered around CENTRES, labelled with their centre, and a header row."""
    rng = random.Random(seed)
    lines = [",".join([*(f"x{i}" for i in range(len(CENTRES[0]))), "label"])]
    for n in range(rows):
        label = n % len(CENTRES)
        point = [f"{rng.gauss(mu, 1.0):.4f}" for mu in CENTRES[label]]
        lines.append(",".join([*point, str(label)]))
    return "\n".join(lines) + "\n"


def plan_files(folder: Path, name: str) -> dict[Path, str]:
    return {
        folder / SPEC_FILE: SPEC.format(name=name, spec=SPEC_FILE),
        folder / "code" / "train.py": TRAIN,
        folder / "code" / "train_keras.py": TRAIN_KERAS,
        folder / "data" / "train" / "train.csv": dataset(TRAIN_ROWS, seed=1),
        folder / "data" / "eval" / "eval.csv": dataset(EVAL_ROWS, seed=2),
    }


def init(folder: str | Path = ".", *, name: str | None = None, force: bool = False) -> Scaffold:
    """Write the spec, the script and the data under `folder`; existing files are kept unless `force`."""
    folder = Path(folder)
    with writing_to(folder):  # /proc/x, a file in the way, a folder not writable: one line
        return _init(folder, name, force)


def _init(folder: Path, name: str | None, force: bool) -> Scaffold:
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} exists and is not a folder")
    job = job_name(folder, name)
    files = plan_files(folder, job)
    existing = [p for p in files if p.exists() or p.is_symlink()]
    if folders := [p for p in existing if p.is_dir() and not p.is_symlink()]:
        raise UserError(f"{folders[0]} is a folder; init writes a file there")
    if existing and not force:
        shown = ", ".join(str(p) for p in existing)
        raise UserError(f"not overwriting {shown} (--force to replace)")
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if path in existing:
            path.unlink()  # a link is replaced, never the file it points to
        with open(path, "x", encoding="utf-8") as f:  # "x": never through a link planted meanwhile
            f.write(text)
    return Scaffold(folder=folder, spec=folder / SPEC_FILE, name=job, files=tuple(files))
