"""Read TensorBoard event files with TensorBoard's own reader (no TensorFlow import), for the tests."""

from __future__ import annotations

from pathlib import Path

METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag in the event files directly in `folder`: its (step, value) points, in file order."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util.tensor_util import make_ndarray

    found: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                number = float(make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
                found.setdefault(value.tag, []).append((event.step, number))
    return found


def epochs_of(folder: Path) -> dict[str, list[int]]:
    """The steps (epochs) each of the four metrics has a point at."""
    points = scalars(folder)
    return {tag: [step for step, _ in points.get(tag, [])] for tag in METRICS}
