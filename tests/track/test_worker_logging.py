"""The worker's MLflow logger (no Ray): it survives a dead server, sends what it held back once the server is back,
and stops retrying once closed."""

from __future__ import annotations

import time

import mlflow

from crystalvision.track.worker_logging import worker_logger
from tests.support.procs import free_port, start_embedded_mlflow, stop_group


def test_worker_logger_outlives_an_mlflow_outage(tmp_path, monkeypatch) -> None:
    """The server is stopped mid-run: logging neither raises nor blocks for long, and what was held back is
    sent once the server is back (same port, same backend)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    port, home, log_path = free_port(), tmp_path / "home", tmp_path / "mlflow.log"
    url = f"http://127.0.0.1:{port}"
    procs = [start_embedded_mlflow(home, port, log_path)]
    try:
        client = mlflow.MlflowClient(url)
        run_id = client.create_run(client.create_experiment("outage")).info.run_id
        logger = worker_logger(url, run_id, rank=0, wait_s=0.5)
        logger.log_metrics({"val_loss": 1.0}, step=0)
        deadline = time.monotonic() + 60  # a busy machine may take longer than one call's 0.5 s wait
        while logger.pending and time.monotonic() < deadline:
            time.sleep(0.05)
        assert logger.pending == 0  # healthy server: sent without any outage
        stop_group(procs[0], grace=3)  # the outage is under test, not the server's graceful stop (~15 s)
        for step in (1, 2, 3):
            logger.log_metrics({"val_loss": 1.0 / (step + 1)}, step=step)  # must not raise
        logger.log_params({"after_outage": "yes"})
        assert logger.pending >= 1 and logger.failures >= 1
        procs.append(start_embedded_mlflow(home, port, log_path))
        assert logger.close(timeout=120) == 0
        assert sorted(m.step for m in client.get_metric_history(run_id, "val_loss")) == [0, 1, 2, 3]
        assert client.get_run(run_id).data.params["after_outage"] == "yes"
    finally:
        for proc in procs:
            stop_group(proc, grace=3)


def test_closed_worker_logger_stops_retrying_a_dead_server(monkeypatch) -> None:
    """After close() gives up, the sender thread ends instead of retrying in a busy loop for the process's life."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    logger = worker_logger(f"http://127.0.0.1:{free_port()}", "0" * 32, rank=0, wait_s=0.1)  # nothing listens
    logger.log_metrics({"val_loss": 1.0}, step=0)
    assert logger.close(timeout=0.2) == 1
    logger._thread.join(timeout=30)
    assert not logger._thread.is_alive(), "the logger still retries after close()"
