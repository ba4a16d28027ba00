"""Training progress on the driver: Ray Train's controller reports each epoch into a Ray queue, and a driver thread
turns the reports into :mod:`crystalvision.core.progress` events (epoch k/N, train loss, validation accuracy).

Ray Train V2 runs ``UserCallback``s in its controller actor, not in the driver, hence the queue. Finer progress goes
through the same queue as heartbeats (:func:`crystalvision.core.progress.beat`, which renew leases): rank 0's worker
puts one at start-up and every few seconds of training and validation batches (:func:`beater`), and the controller
one at every change of its state (scheduling workers, running, restarting after a failure). Nothing is set up when
nobody listens (jobs, Tune, tests that do not ask).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
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


# Controller states that wait for a worker group to start (placement, a node scaling up): bounded by Ray Train's
# worker-group start timeout, after which it counts a failure and changes state again.
STARTING_STATES = ("InitializingState", "SchedulingState", "ReschedulingState", "RestartingState", "ResizingState")


def _state_callback(queue: Any, start_wait_s: float) -> Any | None:
    """A heartbeat at every change of Ray Train's controller state, announcing a wait of ``start_wait_s`` when the
    new state starts workers (None when this Ray has no such hook: its internal callback interface is used, so a
    missing one only costs these heartbeats)."""
    try:
        from ray.train.v2._internal.execution.callback import ControllerCallback
    except ImportError:
        return None

    class ControllerStates(ControllerCallback):
        def __init__(self, queue: Any, start_wait_s: float):
            self.queue, self.start_wait_s = queue, start_wait_s

        def after_controller_state_update(self, previous_state: Any, current_state: Any) -> None:
            if type(previous_state) is type(current_state):  # the control loop sets its state on every poll
                return
            state = type(current_state).__name__
            row: dict[str, Any] = {BEAT: "controller", "state": state}
            if state in STARTING_STATES:
                row["wait_s"] = self.start_wait_s
            try:
                self.queue.put_nowait(row)
            except Exception:
                log.debug("progress queue refused a heartbeat", exc_info=True)

    return ControllerStates(queue, start_wait_s)


BEAT = "beat"  # a queue row with this key is a heartbeat, not an epoch report


def beater(queue: Any, every_s: float) -> Callable[..., None]:
    """For a Ray Train worker: put a heartbeat on the driver's ``queue`` at most every ``every_s`` seconds (a no-op
    without a queue). Never raises: a gone queue only costs heartbeats."""
    last = [float("-inf")]

    def beat(where: str, **info: Any) -> None:
        now = time.monotonic()
        if queue is None or now - last[0] < every_s:
            return
        last[0] = now
        try:
            queue.put_nowait({BEAT: where, **info})
        except Exception:
            log.debug("progress queue refused a heartbeat", exc_info=True)

    return beat


def epoch_event(row: dict[str, Any], epochs: int) -> None:
    """One progress event from one epoch report (``epoch`` counts from 0 in the reports), or a heartbeat."""
    if BEAT in row:
        progress.beat("train", **row)
        return
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
def reporting(epochs: int, start_wait_s: float = 60.0) -> Iterator[tuple[list[Any], Any]]:
    """Callbacks to pass to Ray Train and the queue to hand to its workers for heartbeats (none and None when nobody
    listens); a driver thread emits what arrives. ``start_wait_s``: Ray Train's worker-group start timeout. Ray is
    running (the caller started it: a queue made first would start a default cluster)."""
    if not progress.active():
        yield [], None
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
    states = _state_callback(queue, start_wait_s)
    try:
        yield [_callback_class()(queue), *([states] if states is not None else [])], queue
    finally:
        stop.set()
        thread.join(timeout=5)
        try:
            while not queue.empty():
                epoch_event(queue.get_nowait(), epochs)
        except Exception:  # the queue actor went away with the cluster: the next training makes a new one
            _queues.clear()
