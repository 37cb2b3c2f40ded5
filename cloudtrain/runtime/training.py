"""A distributed custom training loop for classifiers, with fault-tolerant checkpoints.

Keras 3's `model.fit` fails under MultiWorkerMirroredStrategy on TF 2.21 (a PerReplica value reaches a tensor
conversion), so `fit` runs its own loop: `strategy.run` inside a `tf.while_loop`, one `tf.function` call per
epoch, losses scaled to the global batch, sums reduced across replicas once per epoch. It works with Keras 3 and
with tf_keras (TF_USE_LEGACY_KERAS=1).

Under MultiWorkerMirroredStrategy every worker must take part in every collective, so every worker trains,
evaluates, checkpoints and saves; the non-chiefs write to temporary folders that are then deleted.

TensorFlow is imported inside the functions, so importing this module stays cheap and a script may still choose
tf_keras (TF_USE_LEGACY_KERAS=1) after importing cloudtrain.runtime.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cloudtrain.runtime.env import COMMUNICATION_VARIABLE, STRATEGY_VARIABLE, TrainingEnv
from cloudtrain.runtime.report import write_json_atomic
from cloudtrain.runtime.summaries import EpochSummaries, learning_rate

if TYPE_CHECKING:
    import tensorflow as tf

    Data = tuple[np.ndarray, np.ndarray] | tf.data.Dataset

STRATEGIES = ("multi_worker_mirrored", "mirrored", "none")
COMMUNICATIONS = ("auto", "ring", "nccl")
HISTORY_FILE = "history.json"
MODEL_FILE = "model.keras"
SAVED_MODEL_VERSION = "1"  # TF Serving loads <model_dir>/<version>/saved_model.pb


def default_strategy_kind(env: TrainingEnv) -> str:
    """CLOUDTRAIN_STRATEGY, else multi_worker_mirrored under TF_CONFIG, mirrored on several GPUs, else none."""
    if kind := env.environ.get(STRATEGY_VARIABLE):
        return kind
    if env.tf_config:
        return "multi_worker_mirrored"
    return "mirrored" if env.num_gpus > 1 else "none"


def make_strategy(
    env: TrainingEnv, kind: str | None = None, communication: str | None = None
) -> tf.distribute.Strategy:
    """The tf.distribute strategy for this worker; call it first, before any other TensorFlow work.

    `kind` and `communication` default to CLOUDTRAIN_STRATEGY / CLOUDTRAIN_COMMUNICATION (set by the backends from
    the spec). MultiWorkerMirroredStrategy reads the cluster from TF_CONFIG. When several CPU-only workers share
    one machine (the local backend), each gets its share of the cores as intra-op threads: measured faster than
    letting every worker use all cores.
    """
    kind = kind or default_strategy_kind(env)
    communication = communication or env.environ.get(COMMUNICATION_VARIABLE) or "auto"
    if kind not in STRATEGIES:
        raise ValueError(f"unknown strategy {kind!r} (choose from {', '.join(STRATEGIES)})")
    if communication not in COMMUNICATIONS:
        raise ValueError(f"unknown communication {communication!r} (choose from {', '.join(COMMUNICATIONS)})")
    if kind != "multi_worker_mirrored" and env.num_workers > 1:
        raise ValueError(
            f"TF_CONFIG names {env.num_workers} workers but the strategy is {kind!r}: every worker would train alone"
        )

    import tensorflow as tf

    if kind == "multi_worker_mirrored" and env.num_gpus == 0 and env.workers_share_host:
        threads = max(1, env.num_cpus // env.num_workers)
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow already initialised its runtime
            print("note: TensorFlow already started, intra-op threads not limited", flush=True)

    if kind == "multi_worker_mirrored":
        implementation = {
            "auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
            "ring": tf.distribute.experimental.CommunicationImplementation.RING,
            "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
        }[communication]
        options = tf.distribute.experimental.CommunicationOptions(implementation=implementation)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if kind == "mirrored":
        # One host: NCCL on request; otherwise TensorFlow's own choice (NCCL on GPUs where it can).
        cross_device_ops = tf.distribute.NcclAllReduce() if communication == "nccl" else None
        return tf.distribute.MirroredStrategy(cross_device_ops=cross_device_ops)
    return tf.distribute.get_strategy()


@dataclass
class FitResult:
    """What `fit` learned: the final evaluation (reduced over all workers) and the per-epoch history."""

    history: list[dict[str, float]]
    val_loss: float
    val_accuracy: float
    confusion_matrix: np.ndarray
    epochs: int
    resumed_from_epoch: int
    num_workers: int
    global_batch_size: int


def fit(
    model: Any,
    optimizer: Any,
    loss: Callable[[Any, Any], Any],
    *,
    train: Data,
    eval: Data,
    epochs: int,
    global_batch_size: int,
    env: TrainingEnv,
    strategy: tf.distribute.Strategy,
    seed: int = 0,
    max_checkpoints: int = 2,
    sharded: bool | None = None,
) -> FitResult:
    """Train a classifier for `epochs` epochs in total, evaluating and checkpointing after each.

    - `model` and `optimizer` must be created under `strategy.scope()`; the model must be built (have weights),
      and output one score (logit or probability) per class.
    - `loss`: a Keras loss object, e.g. `SparseCategoricalCrossentropy(from_logits=True)`, or a function giving
      per-example losses; it is averaged over the *global* batch, as distributed training needs.
    - `train` / `eval`: `(x, y)` numpy arrays with integer (or one-hot) labels, split by example (each replica
      takes its slice of every global batch); `train` is shuffled per epoch by a stateless permutation of
      (`seed`, epoch), identically on every worker; or unbatched `tf.data.Dataset`s of `(x, y)` that `fit` batches
      and distributes but does not shuffle.
    - `global_batch_size` is split across all replicas of all workers, so results do not depend on the worker count.
    - `sharded`: `train` holds only this worker's share of the data (a channel with `distribution: sharded`,
      ShardedByS3Key on SageMaker); default: whether the `train` channel is. Each worker then reads its own
      examples only (AutoShardPolicy OFF), B / workers per step, shuffled per epoch; a worker whose share runs out
      first takes empty batches until the others finish, so every example is used exactly once per epoch.

    Each epoch of training, and each evaluation, is one `tf.function` call looping over the batches on the
    device (like Keras' steps_per_execution, for the whole epoch): nothing returns to Python between steps, and
    the metrics are per-replica sums read once per epoch.

    Resumes from the latest checkpoint in env.checkpoint_dir (printing `resumed from epoch N`), so a restarted job
    trains only the remaining epochs. The chief prints one metric line per epoch and keeps the history next to
    the checkpoints so the learning curves survive a resume. It also writes each epoch's metrics, learning rate
    and training steps per second as TensorBoard scalars to env.tensorboard_dir (see `summaries`).
    """
    import tensorflow as tf

    if epochs < 0 or global_batch_size < 1:
        raise ValueError("epochs must be >= 0 and global_batch_size >= 1")
    if not model.built or not model.trainable_variables:
        raise ValueError("build the model (e.g. give it an Input) under strategy.scope() before fit")
    per_example_loss = loss.call if isinstance(loss, tf.keras.losses.Loss) else loss
    if sharded is None:
        sharded = env.is_sharded("train")
    train_batches = _Batches(train, global_batch_size, seed, last_epoch=epochs, sharded=sharded)
    eval_batches = _Batches(eval, global_batch_size, None)
    replicas = strategy.num_replicas_in_sync
    num_classes = _num_classes(model, eval_batches)

    with strategy.scope():
        _build_optimizer(optimizer, model)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        # Per-replica sums, reduced across workers only when read: one collective per epoch, not per step.
        train_sums = _accumulator(tf, [3])  # loss sum, correct, examples
        eval_loss_sum = _accumulator(tf, [])
        eval_confusion = _accumulator(tf, [num_classes, num_classes])
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var)

    def train_step(x: Any, y: Any) -> None:  # on each replica
        with tf.GradientTape() as tape:
            scores = model(x, training=True)
            losses = _per_example(per_example_loss(y, scores))
            step_loss = tf.nn.compute_average_loss(losses, global_batch_size=global_batch_size)
            if model.losses:
                step_loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        grads = tape.gradient(step_loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        correct = tf.cast(tf.equal(_labels(y, scores), tf.argmax(scores, axis=-1)), tf.float32)
        count = tf.cast(tf.shape(scores)[0], tf.float32)
        train_sums.assign_add(tf.stack([tf.reduce_sum(losses), tf.reduce_sum(correct), count]))

    def eval_step(x: Any, y: Any) -> None:  # on each replica
        scores = model(x, training=False)
        eval_loss_sum.assign_add(tf.reduce_sum(_per_example(per_example_loss(y, scores))))
        eval_confusion.assign_add(
            tf.math.confusion_matrix(
                _labels(y, scores), tf.argmax(scores, axis=-1), num_classes=num_classes, dtype=tf.float32
            )
        )

    autograph = _needs_autograph(model)
    train_epoch = _epoch_function(tf, strategy, train_step, [train_sums], train_batches, autograph)
    eval_epoch = _epoch_function(tf, strategy, eval_step, [eval_loss_sum, eval_confusion], eval_batches, autograph)

    def evaluate() -> tuple[float, float, np.ndarray]:
        loss_sum, confusion = (t.numpy() for t in eval_epoch(eval_batches.iterator(0, strategy)))
        count = confusion.sum()
        return float(loss_sum / max(count, 1)), float(np.trace(confusion) / max(count, 1)), confusion.round()

    with _checkpoint_manager(checkpoint, env, max_checkpoints) as manager, EpochSummaries(env) as summaries:
        start = _restore(checkpoint, epoch_var, env, strategy)
        history = _load_history(env.checkpoint_dir, start)
        if start:
            _say(env, f"resumed from epoch {start}")
        role = "chief" if env.is_chief else "worker"
        print(  # on every worker, so each worker's log shows that it started and how it sees the cluster
            f"{env.current_host} ({role}, task {env.task_index} of {env.num_workers}): training "
            f"{max(epochs - start, 0)} epoch(s), {replicas} replica(s) in all, global batch {global_batch_size}",
            flush=True,
        )
        val_loss = val_accuracy = float("nan")
        confusion = np.zeros((0, 0))
        for epoch in range(start + 1, epochs + 1):
            began = time.perf_counter()
            sums = train_epoch(train_batches.iterator(epoch, strategy))
            loss_sum, correct, count = (float(t) for t in sums[0].numpy())
            train_seconds = time.perf_counter() - began
            val_loss, val_accuracy, confusion = evaluate()
            record = {
                "epoch": epoch,
                "loss": loss_sum / max(count, 1),
                "accuracy": correct / max(count, 1),
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
                "seconds": round(time.perf_counter() - began, 3),
                "examples": int(count),  # trained on, all workers together: each example once per epoch
            }
            history.append(record)
            _say(
                env,
                f"epoch={epoch} loss={record['loss']:.4f} accuracy={record['accuracy']:.4f} "
                f"val_loss={val_loss:.4f} val_accuracy={val_accuracy:.4f}",
            )
            steps = train_batches.steps or -(-int(count) // global_batch_size)
            rates = {"learning_rate": learning_rate(optimizer), "steps_per_second": steps / max(train_seconds, 1e-9)}
            scalars = {k: v for k, v in record.items() if k not in ("epoch", "seconds", "examples")}
            summaries.write(epoch, scalars | rates)
            epoch_var.assign(epoch)
            if env.is_chief:  # before the checkpoint: a history entry without its checkpoint is dropped on resume
                write_json_atomic(env.checkpoint_dir / HISTORY_FILE, history)
            manager.save(checkpoint_number=epoch)
        if start >= epochs:  # nothing left to train: still evaluate, for the report
            val_loss, val_accuracy, confusion = evaluate()

    return FitResult(
        history=history,
        val_loss=val_loss,
        val_accuracy=val_accuracy,
        confusion_matrix=confusion.astype(np.int64),
        epochs=max(start, epochs),
        resumed_from_epoch=start,
        num_workers=env.num_workers,
        global_batch_size=global_batch_size,
    )


def save_model(model: Any, env: TrainingEnv, saved_model: bool = True) -> Path:
    """Save `model.keras` (and a SavedModel in `1/` for TF Serving) to model_dir on the chief; call it on every
    worker: the others save to a temporary folder, since saving may take part in collectives."""
    import tensorflow as tf

    with _worker_dir(env, env.model_dir) as folder:
        folder.mkdir(parents=True, exist_ok=True)
        model.save(str(folder / MODEL_FILE))
        if saved_model:
            export = folder / SAVED_MODEL_VERSION
            if export.exists():
                shutil.rmtree(export)
            if hasattr(model, "export"):  # Keras 3 and tf_keras >= 2.13: a serving signature from the inputs
                with contextlib.redirect_stdout(io.StringIO()):  # it prints its signatures
                    model.export(str(export))
            else:
                tf.saved_model.save(model, str(export))
    _say(env, f"saved the model to {env.model_dir}")
    return env.model_dir


def _say(env: TrainingEnv, message: str) -> None:
    """Print on the chief only, flushed at once, so log-based metric regexes see each line exactly once."""
    if env.is_chief:
        print(message, flush=True)


class _Batches:
    """The global batches of each epoch, as the iterator that `_epoch_function` reads them from.

    In-memory data: one iterator serves all epochs back to back, `steps` batches each, and lives as long as `fit`.
    With a `seed` each epoch's order is a stateless permutation of (seed, epoch): the same on every worker, and a
    resumed job sees the same order as an uninterrupted one; without, the data's order, repeated. Every worker reads
    every global batch and each replica takes its own slice (in `_epoch_function`), which is what sharding by
    example did, without a distributed dataset: building one per epoch costs about 0.1 s under
    MultiWorkerMirroredStrategy (a multi-device iterator whose functions are traced anew), and its iterator
    agrees with the other workers at every step on whether data remains.

    A `tf.data.Dataset`: batched, not shuffled, and distributed anew each epoch (sharded as TensorFlow's
    AutoShardPolicy.AUTO decides; OFF when `sharded`).

    `sharded` in-memory data is this worker's share only: a dataset of it (shuffled per epoch by (seed, epoch)),
    distributed with AutoShardPolicy OFF, so each worker reads its own examples and none is dropped or repeated.
    """

    def __init__(
        self,
        data: Data,
        global_batch_size: int,
        seed: int | None,
        last_epoch: int | None = None,
        sharded: bool = False,
    ) -> None:
        import tensorflow as tf

        self.sharded = sharded
        self.in_memory = isinstance(data, tuple) and not sharded  # every worker reads every global batch
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.last_epoch = last_epoch  # shuffled data: the iterator ends after it (so nothing is prefetched past it)
        self.data = data
        self.steps = 0  # per epoch, for in-memory data
        if isinstance(data, tuple):
            x, y = data
            if len(x) != len(y):
                raise ValueError(f"{len(x)} examples but {len(y)} labels")
            if not len(x):
                raise ValueError("no examples")
            self.size = len(x)
            self.steps = -(-self.size // global_batch_size) if self.in_memory else 0
            with tf.device("/cpu:0"):  # the input pipeline's side, also on GPU hosts
                self.x, self.y = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
        self._iterator: Any = None
        self._next_epoch = 0

    def first_example(self) -> Any:
        """A batch of one example."""
        if isinstance(self.data, tuple):
            return self.x[:1]
        x, _ = next(iter(self.data.take(1).batch(1)))
        return x

    def iterator(self, epoch: int, strategy: tf.distribute.Strategy) -> Any:
        """An iterator whose next batches are those of `epoch` (its next `steps` ones, for in-memory data)."""
        import tensorflow as tf

        if self.sharded:
            return iter(strategy.experimental_distribute_dataset(self._own_share(epoch)))
        if not self.in_memory:
            batches = self.data.batch(self.global_batch_size).prefetch(tf.data.AUTOTUNE)
            return iter(strategy.experimental_distribute_dataset(batches))
        if self._iterator is None or (self.seed is not None and epoch != self._next_epoch):
            self._iterator = iter(self._dataset(epoch))
        self._next_epoch = epoch + 1
        return self._iterator

    def _own_share(self, epoch: int) -> tf.data.Dataset:
        """This worker's examples for one epoch, batched to the global batch (TensorFlow splits it by replica)."""
        import tensorflow as tf

        if isinstance(self.data, tuple):
            order = tf.range(self.size, dtype=tf.int64)
            if self.seed is not None:
                order = tf.random.experimental.stateless_shuffle(order, [self.seed, epoch])
            dataset = tf.data.Dataset.from_tensor_slices(order).map(
                lambda i: (tf.gather(self.x, i), tf.gather(self.y, i))
            )
        else:
            dataset = self.data
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return dataset.batch(self.global_batch_size).with_options(options).prefetch(tf.data.AUTOTUNE)

    def _dataset(self, first_epoch: int) -> tf.data.Dataset:
        """The batches of the epochs from `first_epoch` to `last_epoch` (unshuffled: of every epoch, without end)."""
        import tensorflow as tf

        size, batch = self.size, self.global_batch_size
        if self.seed is None:
            order = tf.data.Dataset.range(size).batch(batch).repeat()
        else:
            seed = tf.constant(self.seed, tf.int64)

            @tf.autograph.experimental.do_not_convert  # nothing to convert; saves tracing time
            def epoch_order(epoch: tf.Tensor) -> tf.data.Dataset:
                indices = tf.random.experimental.stateless_shuffle(tf.range(size, dtype=tf.int64), [seed, epoch])
                return tf.data.Dataset.from_tensor_slices(indices).batch(batch)

            last = self.last_epoch if self.last_epoch is not None else np.iinfo(np.int64).max - 1
            order = tf.data.Dataset.range(first_epoch, max(first_epoch, last + 1)).flat_map(epoch_order)
        x, y = self.x, self.y

        @tf.autograph.experimental.do_not_convert
        def gather(indices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return tf.gather(x, indices), tf.gather(y, indices)

        return order.map(gather).prefetch(tf.data.AUTOTUNE)


def _labels(y: tf.Tensor, scores: tf.Tensor) -> tf.Tensor:
    """Integer class labels from integer or one-hot `y`."""
    import tensorflow as tf

    if y.shape.rank is not None and y.shape.rank == scores.shape.rank and y.shape[-1] == scores.shape[-1] != 1:
        return tf.argmax(y, axis=-1)
    return tf.cast(tf.reshape(y, [-1]), tf.int64)


def _per_example(losses: tf.Tensor) -> tf.Tensor:
    """One loss per example: the mean over any further axes (say, time steps)."""
    import tensorflow as tf

    rank = losses.shape.rank
    return tf.reduce_mean(losses, axis=list(range(1, rank))) if rank and rank > 1 else losses


def _accumulator(tf: Any, shape: list[int]) -> tf.Variable:
    """A float32 sum kept per replica and summed over all replicas when read (as Keras metrics keep theirs)."""
    return tf.Variable(
        tf.zeros(shape),
        trainable=False,
        synchronization=tf.VariableSynchronization.ON_READ,
        aggregation=tf.VariableAggregation.SUM,
    )


def _epoch_function(
    tf: Any,
    strategy: tf.distribute.Strategy,
    step: Callable[[Any, Any], None],
    sums: list[tf.Variable],
    batches: _Batches,
    autograph: bool,
) -> Callable[[Any], list[tf.Tensor]]:
    """One `tf.function` call per epoch: zero `sums`, run `step` on every replica for each batch of the epoch in a
    `tf.while_loop`, then read `sums` (an all-reduce across workers).

    One call per step would cost a Python dispatch and an iterator round trip per step, which dominates for small
    models; inside the loop nothing reaches the host. In-memory data: exactly `batches.steps` steps, every replica
    taking its slice of each global batch, so every worker runs the same steps (and collectives). A distributed
    dataset: until its iterator runs dry; `get_next_as_optional` agrees on that across workers. The batch dimension
    is unknown in the iterators' specs, so a short last batch does not retrace. `autograph` (see `_needs_autograph`)
    adds 0.7-1 s of tracing for the digits example on 2 cores, more than the rest of its first epoch.
    """
    replicas = strategy.num_replicas_in_sync

    def replica_step(x: Any, y: Any) -> None:
        if batches.in_memory and replicas > 1:  # this replica's share of the global batch
            replica = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int32)
            size = tf.shape(x)[0]
            begin, end = size * replica // replicas, size * (replica + 1) // replicas
            x, y = x[begin:end], y[begin:end]
        step(x, y)

    @tf.function(autograph=autograph)
    def run_epoch(iterator: Any) -> list[tf.Tensor]:
        for v in sums:
            v.assign(tf.zeros_like(v))
        if batches.in_memory:

            def step_on_next(count: tf.Tensor) -> list[tf.Tensor]:
                strategy.run(replica_step, args=iterator.get_next())
                return [count + 1]

            tf.while_loop(lambda count: count < batches.steps, step_on_next, [tf.constant(0)])
        else:

            def step_on(batch: Any) -> list[Any]:
                strategy.run(replica_step, args=batch.get_value())
                return [iterator.get_next_as_optional()]

            tf.while_loop(lambda batch: batch.has_value(), step_on, [iterator.get_next_as_optional()])
        return [v.read_value() for v in sums]

    return run_epoch


def _needs_autograph(model: Any) -> bool:
    """Whether to trace the steps with autograph: not for Keras 3, which never converts a layer's `call` (its own
    `fit` runs its step with autograph off, as `fit` here then does); yes for tf_keras and Keras 2, whose layers
    convert `call` when their caller runs under autograph, so a model may rely on it (Python `if` on a tensor)."""
    return not any(cls.__module__.startswith("keras.src.models.") for cls in type(model).__mro__)


def _num_classes(model: Any, batches: _Batches) -> int:
    """The width of the model's output, from one example (works for subclassed models too)."""
    width = model(batches.first_example(), training=False).shape[-1]
    if not width or width < 2:
        raise ValueError(f"the model must output one score per class (2 or more), got width {width}")
    return int(width)


def _build_optimizer(optimizer: Any, model: Any) -> None:
    """Create the optimizer's slot variables now, so a checkpoint restores them instead of deferring."""
    if not getattr(optimizer, "built", False) and not getattr(optimizer, "_built", False):
        optimizer.build(model.trainable_variables)


@contextlib.contextmanager
def _worker_dir(env: TrainingEnv, chief_dir: Path) -> Iterator[Path]:
    """`chief_dir` on the chief; a temporary folder, removed afterwards, on the other workers."""
    if env.is_chief:
        yield chief_dir
        return
    folder = Path(tempfile.mkdtemp(prefix=f"cloudtrain-worker{env.task_index}-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _checkpoint_manager(checkpoint: Any, env: TrainingEnv, max_to_keep: int) -> Iterator[Any]:
    import tensorflow as tf

    with _worker_dir(env, env.checkpoint_dir) as folder:
        yield tf.train.CheckpointManager(checkpoint, directory=str(folder), max_to_keep=max_to_keep)


def _restore(checkpoint: Any, epoch_var: Any, env: TrainingEnv, strategy: tf.distribute.Strategy) -> int:
    """Restore the latest checkpoint from checkpoint_dir on every worker and check that all workers agree.

    A worker that restored another epoch than its peers would silently train different weights, so a mismatch
    (say, a checkpoint folder that is not shared or synced) is an error on every worker.
    """
    import tensorflow as tf

    for prefix in complete_checkpoints(env.checkpoint_dir):
        try:
            restored = checkpoint.restore(prefix)
        except (RuntimeError, tf.errors.OpError) as e:  # an index cut short: the worker died while writing it
            reason = next(iter(str(e).strip().splitlines()), type(e).__name__)
            print(f"note: {Path(prefix).name} cannot be read ({reason}); trying the one before", flush=True)
            continue
        restored.assert_existing_objects_matched()
        break
    epoch = int(epoch_var.numpy())
    if strategy.num_replicas_in_sync > 1:
        value = tf.constant([epoch, epoch * epoch], dtype=tf.float64)

        @tf.function
        def all_reduce() -> tf.Tensor:
            return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.identity, args=(value,)), axis=None)

        total, square = all_reduce().numpy()
        if total * total != square * strategy.num_replicas_in_sync:
            raise RuntimeError(
                f"workers restored different checkpoints (this one: epoch {epoch}, mean "
                f"{total / strategy.num_replicas_in_sync:g}); every worker must see the chief's checkpoint folder "
                f"{env.checkpoint_dir}"
            )
    return epoch


def complete_checkpoints(checkpoint_dir: Path) -> list[str]:
    """The `ckpt-N` prefixes whose index and every data shard are there, newest first, whatever the `checkpoint`
    file names.

    SageMaker uploads a checkpoint folder file by file in no set order, and an interruption can cut that
    upload: the restored folder may name a checkpoint whose files never arrived, or lack some of a newer one's.
    A worker killed between writing ckpt-N and naming it in `checkpoint` leaves that file one behind.
    """
    if not checkpoint_dir.is_dir():
        return []
    complete = []
    for index in checkpoint_dir.glob("ckpt-*.index"):
        prefix = index.name.removesuffix(".index")
        number = prefix.removeprefix("ckpt-")
        shards = list(checkpoint_dir.glob(f"{prefix}.data-*-of-*"))
        if not number.isdigit() or not shards:
            continue
        total = shards[0].name.rsplit("-of-", 1)[1]
        if total.isdigit() and len(shards) == int(total):
            complete.append((int(number), str(checkpoint_dir / prefix)))
    return [prefix for _, prefix in sorted(complete, reverse=True)]


def _load_history(checkpoint_dir: Path, epochs_done: int) -> list[dict[str, float]]:
    """The history saved with the checkpoints, cut to the restored epoch (entries past it had no checkpoint)."""
    path = checkpoint_dir / HISTORY_FILE
    if not epochs_done or not path.is_file():
        return []
    try:
        history = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        print(f"note: could not read {path}; the learning curves start at the resumed epoch", flush=True)
        return []
    return [h for h in history if isinstance(h, dict) and h.get("epoch", 0) <= epochs_done]
