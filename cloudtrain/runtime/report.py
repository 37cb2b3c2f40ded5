"""The evaluation report: `eval_report.json`, `learning_curves.png` and `confusion_matrix.png` in output_data_dir.

Metrics come from the confusion matrix with numpy alone (no scikit-learn in the training image); plots need
matplotlib and are skipped with a printed note when it is missing. TensorFlow is not imported here.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from cloudtrain.runtime.env import TrainingEnv
    from cloudtrain.runtime.training import FitResult

REPORT_FILE = "eval_report.json"
CURVES_FILE = "learning_curves.png"
CONFUSION_FILE = "confusion_matrix.png"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and a rename, so a killed worker never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise division with 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    out = np.zeros_like(numerator, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def classification_metrics(confusion: np.ndarray, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support and their macro and weighted averages.

    `confusion[i, j]` counts examples of true class i predicted as class j (TensorFlow's and scikit-learn's
    orientation).
    """
    cm = np.asarray(confusion, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(cm.shape[0])]
    if len(names) != cm.shape[0]:
        raise ValueError(f"{len(names)} class names for {cm.shape[0]} classes")
    true_positive = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    precision = _safe_divide(true_positive, cm.sum(axis=0).astype(np.float64))
    recall = _safe_divide(true_positive, support.astype(np.float64))
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    total = int(support.sum())
    weights = support / total if total else np.zeros_like(precision)
    return {
        "accuracy": float(true_positive.sum() / total) if total else 0.0,
        "num_examples": total,
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(names, precision, recall, f1, support, strict=True)
        },
        "macro_avg": {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean())},
        "weighted_avg": {
            "precision": float(precision @ weights),
            "recall": float(recall @ weights),
            "f1": float(f1 @ weights),
        },
        "class_names": names,
        "confusion_matrix": cm.tolist(),
    }


def build_report(result: FitResult, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """The content of eval_report.json for a finished `fit`."""
    metrics = classification_metrics(result.confusion_matrix, class_names)
    return {
        "loss": result.val_loss,
        **metrics,
        "epochs": result.epochs,
        "epochs_this_run": result.epochs - result.resumed_from_epoch,
        "resumed_from_epoch": result.resumed_from_epoch,
        "num_workers": result.num_workers,
        "global_batch_size": result.global_batch_size,
        "history": result.history,
    }


def write_report(result: FitResult, env: TrainingEnv, class_names: Sequence[str] | None = None) -> Path | None:
    """On the chief, write the report and its plots to output_data_dir and return the report's path.

    Other workers return None at once: the report needs no collective, since `fit` already reduced the confusion
    matrix on every worker.
    """
    if not env.is_chief:
        return None
    report = build_report(result, class_names)
    path = env.output_data_dir / REPORT_FILE
    write_json_atomic(path, report)
    plot_learning_curves(result.history, env.output_data_dir / CURVES_FILE)
    plot_confusion_matrix(
        np.asarray(report["confusion_matrix"]), report["class_names"], env.output_data_dir / CONFUSION_FILE
    )
    print(
        f"eval report: accuracy={report['accuracy']:.4f} macro_f1={report['macro_avg']['f1']:.4f} "
        f"on {report['num_examples']} examples -> {path}",
        flush=True,
    )
    return path


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend, or None (with a note) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the report's plots", flush=True)
        return None
    return plt


def plot_learning_curves(history: Sequence[dict[str, Any]], path: Path) -> bool:
    """Loss and accuracy per epoch, train against eval. Returns whether the file was written."""
    plt = _pyplot()
    if plt is None or not history:
        return False
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(epochs, [h[metric] for h in history], marker="o", label="train")
        ax.plot(epochs, [h[f"val_{metric}"] for h in history], marker="o", label="eval")
        ax.set(xlabel="epoch", ylabel=metric, title=metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
    return True


def plot_confusion_matrix(confusion: np.ndarray, class_names: Sequence[str], path: Path) -> bool:
    """The confusion matrix as a heat map with counts. Returns whether the file was written."""
    plt = _pyplot()
    if plt is None:
        return False
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.5 + 0.5 * n, 1.2 + 0.5 * n))
    image = ax.imshow(confusion, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ax.set(xticks=range(n), yticks=range(n), xticklabels=class_names, yticklabels=class_names)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix")
    threshold = confusion.max() / 2 if confusion.size else 0
    for i in range(n):
        for j in range(n):
            color = "white" if confusion[i, j] > threshold else "black"
            ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center", color=color, fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
    return True


def _save_figure(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, path)
