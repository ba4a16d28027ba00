"""Rank-0 MLflow logging from Ray Train workers: buffered, retried through outages, never raising.

Workers never rely on the driver's MLflow state or environment: they get the tracking URI and run id as arguments
and log through an explicit :class:`mlflow.MlflowClient`. Secrets are masked as in :mod:`crystalvision.track.tracking`.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from crystalvision.track.tracking import _redact, _redact_obj, log_params_safe

log = logging.getLogger(__name__)


class WorkerLogger:
    """Best-effort MLflow logging from a Ray Train worker (a no-op unless it is rank 0 with a run id).

    Calls are queued in order and sent by one background thread, which keeps retrying while the server is away
    (MLflow's client retries inside each attempt, then ``retry_s`` between attempts). A call waits at most
    ``wait_s`` for the queue to drain, so with a healthy server logging is synchronous and with a dead one
    training goes on; nothing raises. At most ``max_pending`` calls are kept (the oldest are dropped, counted in
    ``dropped``). :meth:`close` waits up to its timeout for the rest and returns how many were never sent.
    """

    def __init__(
        self, tracking_uri: str | None, run_id: str | None, enabled: bool, *, wait_s: float = 5.0,
        retry_s: float = 2.0, max_pending: int = 10_000,
    ) -> None:  # fmt: skip
        self.tracking_uri, self.run_id, self.enabled = tracking_uri, run_id, enabled
        self.wait_s, self.retry_s, self.max_pending = wait_s, retry_s, max_pending
        self.dropped = self.failures = 0
        self._pending: collections.deque[Callable[[], None]] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> int:
        """Calls not yet sent."""
        with self._cond:
            return len(self._pending)

    def _client(self):
        import mlflow

        return mlflow.MlflowClient(self.tracking_uri)

    def _submit(self, op: Callable[[], None]) -> None:
        if not self.enabled:
            return
        with self._cond:
            if len(self._pending) >= self.max_pending:
                self._pending.popleft()
                self.dropped += 1
            self._pending.append(op)
            self._cond.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=self._send_loop, name="mlflow-logger", daemon=True)
                self._thread.start()
        self.flush(self.wait_s)

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                op = self._pending[0]
            try:
                op()
            except Exception as exc:  # an outage or a refused call: keep it, try again later, never raise
                if _refused(exc):  # the server answered "no" (4xx): retrying cannot help
                    log.warning("MLflow refused a logging call for run %s: %s", self.run_id, _redact(str(exc))[:300])
                    with self._cond:
                        self._pending.popleft()
                        self._cond.notify_all()
                    continue
                self.failures += 1
                if self.failures == 1 or self.failures % 20 == 0:
                    log.warning(
                        "MLflow at %s unreachable (%s: %s); %d call(s) buffered, retrying",
                        self.tracking_uri,
                        type(exc).__name__,
                        _redact(str(exc))[:300],
                        self.pending,
                    )
                with self._cond:
                    if self._closed:  # close() gave up on the rest and said so: stop (no busy retry loop)
                        return
                    self._cond.wait(timeout=self.retry_s)
                continue
            with self._cond:
                if self._pending and self._pending[0] is op:
                    self._pending.popleft()
                self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until every queued call is sent; True when none is left."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(timeout=left)
        return True

    def close(self, timeout: float = 60.0) -> int:
        """Send what is queued (waiting at most ``timeout`` s), stop the thread; returns the calls never sent."""
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            left = len(self._pending)
        if left or self.dropped:
            log.warning(
                "MLflow at %s: %d logging call(s) not sent, %d dropped (run %s)",
                self.tracking_uri,
                left,
                self.dropped,
                self.run_id,
            )
        return left

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        import mlflow

        entities = [mlflow.entities.Metric(k, float(v), _now_ms(), step) for k, v in metrics.items()]
        self._submit(lambda: self._client().log_batch(self.run_id, metrics=entities))

    def log_params(self, params: Mapping[str, Any]) -> None:
        values = dict(params)
        self._submit(lambda: log_params_safe(values, run_id=self.run_id, tracking_uri=self.tracking_uri))

    def log_dict(self, data: dict, artifact_file: str) -> None:
        clean = _redact_obj(data)
        self._submit(lambda: self._client().log_dict(self.run_id, clean, artifact_file))

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        self._submit(lambda: self._client().log_artifacts(self.run_id, local_dir, artifact_path))


def _refused(exc: Exception) -> bool:
    """True when MLflow answered with a client error (bad value, missing run), not an outage."""
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and 400 <= exc.get_http_status_code() < 500


def worker_logger(tracking_uri: str | None, run_id: str | None, rank: int, wait_s: float = 5.0) -> WorkerLogger:
    """A logger for a Ray worker: only rank 0 with a run id writes (never through env or global state);
    best-effort and buffered (:class:`WorkerLogger`)."""
    return WorkerLogger(tracking_uri, run_id, enabled=bool(run_id) and rank == 0, wait_s=wait_s)


def _now_ms() -> int:
    return int(time.time() * 1000)
