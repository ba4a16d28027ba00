"""Training progress on the driver: Ray Train's controller reports each epoch into a Ray queue, and a driver thread
turns the reports into :mod:`crystalvision.core.progress` events (epoch k/N, train loss, validation accuracy).

Ray Train V2 runs ``UserCallback``s in its controller actor, not in the driver, hence the queue. Nothing is set up
when nobody listens (jobs, Tune, tests that do not ask).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from crystalvision.core import progress

log = logging.getLogger(__name__)
SHOWN = {
    "train_loss": "loss",
    "val_loss": "val_loss",
    "val_acc_crystal_system": "val_acc_system",
    "val_acc_spacegroup": "val_acc_sg",
}


def _callback_class() -> type:
    from ray.train import UserCallback

    class EpochReports(UserCallback):
        """Puts rank 0's metrics of every report on the driver's queue (never blocks training)."""

        def __init__(self, queue: Any):
            self.queue = queue

        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            if not metrics:
                return
            row = {k: v for k, v in metrics[0].items() if k == "epoch" or k in SHOWN}
            try:
                self.queue.put_nowait(row)
            except Exception:  # a full or gone queue only costs a progress line
                log.debug("progress queue refused a report", exc_info=True)

    return EpochReports


def epoch_event(row: dict[str, Any], epochs: int) -> None:
    """One progress event from one epoch report (``epoch`` counts from 0 in the reports)."""
    info = {SHOWN[k]: float(v) for k, v in row.items() if k in SHOWN and v is not None}
    progress.emit("train", int(row.get("epoch", 0)) + 1, epochs, unit="epoch", **info)


# (node id, job id) of this driver's Ray connection -> its report queue: one actor per driver, not per training
_queues: dict[tuple[str, str], Any] = {}


def _queue() -> Any:
    """The driver's report queue: made on first use in a Ray session, then reused by every later training (an
    actor is a process start: seconds on a small machine); made again after Ray was restarted."""
    import ray
    from ray.util.queue import Queue

    context = ray.get_runtime_context()
    key = (context.get_node_id(), context.get_job_id())  # job ids restart at 1 in a new cluster; node ids do not
    queue = _queues.get(key)
    if queue is not None:
        try:
            while not queue.empty():  # reports a stopped training left behind
                queue.get_nowait()
            return queue
        except Exception:  # its actor is gone (a cluster restarted under the same ids): make a new one
            log.debug("progress queue gone; making a new one", exc_info=True)
    _queues.clear()
    queue = _queues[key] = Queue(maxsize=1000, actor_options={"num_cpus": 0})
    return queue


@contextmanager
def reporting(epochs: int) -> Iterator[list[Any]]:
    """Callbacks to pass to Ray Train (empty when nobody listens); a driver thread emits their reports. Ray is
    running (the caller started it: a queue made first would start a default cluster)."""
    if not progress.active():
        yield []
        return
    from ray.util.queue import Empty

    queue = _queue()
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set():
            try:
                epoch_event(queue.get(timeout=0.5), epochs)
            except Empty:
                continue
            except Exception:  # the queue actor went away with the cluster
                return

    thread = threading.Thread(target=pump, name="train-progress", daemon=True)
    thread.start()
    try:
        yield [_callback_class()(queue)]
    finally:
        stop.set()
        thread.join(timeout=5)
        try:
            while not queue.empty():
                epoch_event(queue.get_nowait(), epochs)
        except Exception:  # the queue actor went away with the cluster: the next training makes a new one
            _queues.clear()
