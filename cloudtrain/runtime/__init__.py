"""The code that runs inside every training worker, on SageMaker or on the local backend.

It ships inside the user's code tarball (next to a trivial `cloudtrain/__init__.py`) and runs in AWS's stock
TensorFlow images too, so it imports only the standard library, numpy, TensorFlow (lazily, inside functions, so
`cloudtrain.runtime.env` works without it and a script can still pick tf_keras) and, for plots, matplotlib.

A training script::

    from cloudtrain.runtime import TrainingEnv, fit, make_strategy, report_failures, save_model, write_report

    def main() -> None:
        env = TrainingEnv.from_environ()          # hosts, channels, hyperparameters, folders, TF_CONFIG
        strategy = make_strategy(env)             # first TensorFlow work in the process
        with strategy.scope():
            model = build_model()                 # a built Keras model that outputs one score per class
            optimizer = tf.keras.optimizers.Adam(env.hp("learning_rate", 1e-3))
        result = fit(model, optimizer, tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                     train=(x, y), eval=(x_eval, y_eval), epochs=env.hp("epochs", 10),
                     global_batch_size=env.hp("batch_size", 64), env=env, strategy=strategy)
        save_model(model, env)                    # every worker; only the chief's copy lands in model_dir
        write_report(result, env)                 # chief only: eval_report.json + plots in output_data_dir

    if __name__ == "__main__":
        with report_failures():                   # an error becomes <root>/output/failure, then re-raises
            main()

What each piece does:

- `TrainingEnv.from_environ(environ=os.environ)`: reads SM_* (else the /opt/ml files, else defaults under the
  root: `CLOUDTRAIN_OPT_ML` or /opt/ml), TF_CONFIG and `CLOUDTRAIN_CHECKPOINT_DIR` (default `<root>/checkpoints`).
  `env.hp(name, default)` gives a hyperparameter typed like its default; `env.channel(name)` a channel's folder;
  `env.is_chief` is true on task 0 (or without TF_CONFIG).
- `make_strategy(env, kind=None, communication=None)`: `multi_worker_mirrored`, `mirrored` or `none`, defaulting
  to `CLOUDTRAIN_STRATEGY` / `CLOUDTRAIN_COMMUNICATION`.
- `fit(...)`: a custom distributed loop (Keras 3's `model.fit` fails under MultiWorkerMirroredStrategy on TF 2.21),
  one `tf.function` call per epoch (the steps loop on the device), evaluating on all workers every epoch,
  printing one line per epoch on the chief
  (`epoch=3 loss=0.1234 accuracy=0.9500 val_loss=0.2000 val_accuracy=0.9300`) and writing the same as TensorBoard
  scalars (with learning rate and steps/s) to `env.tensorboard_dir` (`<root>/output/tensorboard`, which SageMaker
  uploads while the job runs), checkpointing every epoch and resuming from the latest checkpoint
  (`resumed from epoch N`). Returns a `FitResult`.
- `save_model(model, env)`: `model.keras` and a SavedModel under `model_dir/1/` (for TF Serving).
- `write_report(result, env, class_names=None)`: `eval_report.json` (loss, accuracy, per-class precision, recall,
  F1 and support, macro and weighted averages, confusion matrix, history, resume info), `learning_curves.png`,
  `confusion_matrix.png`.
- `report_failures()`: writes a one-line failure reason, SageMaker's convention for the job's FailureReason.

Every worker must call `fit` and `save_model`: under MultiWorkerMirroredStrategy each takes part in every
collective, and a worker that leaves early makes the others fail.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from cloudtrain.runtime.env import TrainingEnv, build_tf_config, report_failures, write_failure

if TYPE_CHECKING:
    from cloudtrain.runtime.report import classification_metrics, write_report
    from cloudtrain.runtime.training import FitResult, fit, make_strategy, save_model

# Imported on first use (PEP 562), so `import cloudtrain.runtime.env` in the launcher stays stdlib-only and fast.
_LAZY = {
    "classification_metrics": "cloudtrain.runtime.report",
    "write_report": "cloudtrain.runtime.report",
    "FitResult": "cloudtrain.runtime.training",
    "fit": "cloudtrain.runtime.training",
    "make_strategy": "cloudtrain.runtime.training",
    "save_model": "cloudtrain.runtime.training",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FitResult",
    "TrainingEnv",
    "build_tf_config",
    "classification_metrics",
    "fit",
    "make_strategy",
    "report_failures",
    "save_model",
    "write_failure",
    "write_report",
]
