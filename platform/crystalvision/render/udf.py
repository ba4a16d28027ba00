"""The Ray Data render UDF: one Renderer (one GL context) per actor.

In the shard layout (the default) the actor renders and compresses each image on its own thread and returns it
(about one core per actor). For PNGs (``layout: files`` or ``export_png``) it hands each image to a small thread
pool that encodes the PNG and writes it (zlib and the store's I/O release the GIL), so the next render starts
while the last image is still being written.

Poison structures (docs/architecture.md, failure table):

- errors of the structure itself (parsing, species, geometry, an exception while drawing it) become that row's
  error, and the driver quarantines the structure;
- a structure whose render crashes the actor process, or exceeds ``render.structure_timeout_s`` (a watchdog ends
  the process), is counted in an attempt marker ``<prefix>/attempts/<material_id>-<first view>`` of its batch; Ray
  retries the batch on a restarted actor (both bounded), and once the marker counts
  :data:`MAX_CRASHES` the structure's rows come back as errors without rendering, so the batch goes on.
  What counts: the watchdog's timeout (it writes the count itself before it ends the process) and a fatal signal
  raised inside the actor while it draws that structure (SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL from VTK or the
  GL driver: :mod:`faulthandler` writes them to the actor's crash log, whose path the marker names). A process killed
  from outside (SIGKILL from the OOM killer, a lost node, a preempted pod) leaves an empty crash log, or none
  that the next attempt can read: it is infrastructure, never counted, and Ray's bounded retries then fail the
  render loudly if it keeps happening;
- memory, GL-backend and storage errors are not the structure's fault: the image is retried
  (:data:`TRANSIENT_RETRIES` times, with a fresh GL context for GL errors) and then the task fails loudly.
"""

from __future__ import annotations

import contextlib
import faulthandler
import hashlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from crystalvision.core import CrystalVisionError, RenderConfig, StorageError, StorageSettings
from crystalvision.data import ObjectStore, shards
from crystalvision.render.backend import BackendError

log = logging.getLogger(__name__)

# Test hook: "after=N" makes the first render actor that has written N images exit hard, once per store prefix;
# "crash=<material_id>" exits whenever that structure is drawn; "hang=<material_id>" sleeps while drawing it;
# "simulate_ms=X" replaces each render after an actor's first by an X ms sleep, and writes that first image's PNG
# (the benchmark's simulation of more workers than cores: Ray Data's scheduling, the driver and the writes stay
# real; rendering and encoding, which scale with cores, become idle time).
FAULT_ENV = "CRYSTALVISION_RENDER_FAULT"
MAX_CRASHES = 2  # crashes or timeouts of one structure's batch before it is quarantined
TRANSIENT_RETRIES = 2  # extra attempts of one image after a memory/GL/storage error
TRANSIENT = (MemoryError, BackendError, StorageError)
WRITER_THREADS = 2


def _maybe_fault(fault: dict[str, Any] | None, n_written: int) -> None:
    """Exit this actor's process hard mid-batch once ``after`` images are written (the test hook)."""
    if not fault or "after" not in fault or n_written < fault["after"] or os.path.exists(fault["marker"]):
        return
    os.makedirs(os.path.dirname(fault["marker"]), exist_ok=True)
    open(fault["marker"], "w").close()
    log.warning("fault injection: render actor exits after writing %d images", n_written)
    os._exit(1)


def attempt_key(prefix: str, material_id: str, first_view: int) -> str:
    return f"{prefix}/attempts/{material_id}-{first_view:04d}"


_crash_log: str | None = None


def crash_log() -> str:
    """This process's crash log: :mod:`faulthandler` writes a fatal signal's traceback there (enabled once)."""
    global _crash_log
    if _crash_log is None:
        folder = os.path.join(tempfile.gettempdir(), "crystalvision-render-crashes")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{os.getpid()}-{uuid.uuid4().hex[:8]}.log")
        faulthandler.enable(file=open(path, "w"))  # noqa: SIM115 - stays open for the process's lifetime
        _crash_log = path
    return _crash_log


def _parse_marker(text: str | None) -> dict[str, Any]:
    """An attempt marker: ``{"crashes": n, "drawing": {host, pid, crash_log} | None}`` (a bare count: older form)."""
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        data = {}
    if isinstance(data, int):
        return {"crashes": data, "drawing": None}
    return {"crashes": int(data.get("crashes", 0)), "drawing": data.get("drawing")} if isinstance(data, dict) else {}


def died_drawing(drawing: dict[str, Any] | None) -> str:
    """Why the attempt that left ``drawing`` in a marker counts against its structure ("" when it does not): its
    process died of a fatal signal raised inside it (its crash log has the traceback). A process that is still this
    one (the batch failed with an error), on another machine (its log cannot be read here), or that left an empty
    log (killed from outside: OOM killer, lost node) does not count."""
    if not drawing or drawing.get("host") != socket.gethostname() or drawing.get("pid") == os.getpid():
        return ""
    try:
        with open(str(drawing.get("crash_log")), errors="replace") as fh:
            return fh.read(4000).strip()
    except OSError:
        return ""


class Watchdog:
    """Ends the actor process when one structure's views take longer than the budget (the crash path then counts
    it): GL calls cannot be interrupted from Python."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.deadline: float | None = None
        self.what = ""
        self.on_timeout: Callable[[], None] | None = None
        threading.Thread(target=self._watch, daemon=True, name="render-watchdog").start()

    def arm(self, what: str, on_timeout: Callable[[], None] | None = None) -> None:
        self.what, self.on_timeout, self.deadline = what, on_timeout, time.monotonic() + self.budget_s

    def disarm(self) -> None:
        self.deadline = None

    def _watch(self) -> None:
        while True:
            time.sleep(min(0.5, self.budget_s / 4))
            deadline = self.deadline
            if deadline is not None and time.monotonic() > deadline:
                log.error("%s exceeded its render time budget of %.0f s; ending this actor", self.what, self.budget_s)
                if self.on_timeout is not None:
                    with contextlib.suppress(Exception):  # the count is best-effort; the exit is not
                        self.on_timeout()
                os._exit(3)


class RenderBatch:
    """Class-based Ray Data UDF: one Renderer per actor, reused for every batch."""

    def __init__(
        self,
        structures: dict[str, dict] | list,
        cfg: dict,
        store_root: str,
        storage: StorageSettings | None,
        checked: tuple[str, str] | None = None,
        fault: dict[str, Any] | None = None,
        prefix: str = "",
        return_images: bool = False,
    ):
        """``structures``: material_id -> Structure.as_dict(), or ``[ObjectRef]`` of that dict (keeps the actor's
        constructor arguments small). ``checked`` = (node id, window class) of the driver's backend check, reused
        by actors on the driver's node. ``fault``: the test hook (:func:`parse_fault`). ``prefix``: the render
        prefix, for attempt markers ("" disables them). ``return_images``: each row's image comes back in an
        ``image`` column as a zstd frame of its raw pixels (the shard layout,
        :func:`crystalvision.data.shards.compress`); a PNG is then written only for rows with a non-empty
        ``image_key``."""
        import ray

        from crystalvision.render.backend import assume_backend

        if checked and ray.is_initialized() and ray.get_runtime_context().get_node_id() == checked[0]:
            assume_backend(checked[1])

        self.cfg = RenderConfig.model_validate(cfg)
        self.store = ObjectStore(store_root, storage)
        self.raw = ray.get(structures[0]) if isinstance(structures, list) else structures
        self.structures: dict[str, Any] = {}
        self.fault = fault or {}
        self.prefix = prefix
        self.return_images = return_images
        self.renderer = self._new_renderer()
        self.pool = ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="render-writer")
        self.watchdog = Watchdog(self.cfg.structure_timeout_s)
        self.n_written = 0
        self.simulated: np.ndarray | None = None
        self.simulated_png: bytes | None = None
        self.simulated_frame: bytes | None = None

    def _new_renderer(self) -> Any:
        from crystalvision.render.scene import Renderer

        return Renderer(self.cfg)

    def _structure(self, material_id: str) -> Any:
        if material_id not in self.structures:
            from crystalvision.data import structure_from_dict

            # keep only the current structure: rows arrive grouped by material
            self.structures = {material_id: structure_from_dict(self.raw[material_id], material_id)}
        return self.structures[material_id]

    # -- one image --------------------------------------------------------------------------------------------
    def _draw(self, material_id: str, quat: np.ndarray) -> np.ndarray:
        if self.fault.get("crash") == material_id:
            log.warning("fault injection: render actor crashes on %s", material_id)
            faulthandler._sigsegv()  # a segfault inside the drawing, as a VTK or GL driver bug raises it
        if self.fault.get("hang") == material_id:
            time.sleep(3600)
        if "simulate_ms" in self.fault and self.simulated is not None:
            time.sleep(float(self.fault["simulate_ms"]) / 1000)  # the GL work as idle time; the first image is real
            return self.simulated
        image = self.renderer.render(self._structure(material_id), quat)
        if "simulate_ms" in self.fault:
            self.simulated = image
        return image

    def _image(self, material_id: str, quat: np.ndarray) -> tuple[np.ndarray | None, str]:
        """(pixels, "") or (None, error) for one view. The structure's own problems become the error; memory and
        GL errors are retried with a fresh renderer, then raised (they fail the task, which Ray retries)."""
        for attempt in range(TRANSIENT_RETRIES + 1):
            try:
                return self._draw(material_id, quat), ""
            except TRANSIENT as exc:
                if attempt == TRANSIENT_RETRIES:
                    raise
                log.warning("%s: %s while drawing; retrying (attempt %d)", material_id, exc, attempt + 2)
                if isinstance(exc, BackendError):
                    self.renderer.close()
                    self.renderer = self._new_renderer()
            except CrystalVisionError as exc:
                return None, str(exc)
            except Exception as exc:  # an odd structure must not take the batch down
                return None, f"{type(exc).__name__}: {exc}"
        raise AssertionError("unreachable")

    def _write(self, key: str, image: np.ndarray) -> str:
        """Encode and store one image (on a writer thread); storage errors are retried, then fail the task.
        Returns ``"size:sha256"`` of the stored bytes (the render manifest's check that an image is whole)."""
        from crystalvision.data import encode_png

        if "simulate_ms" in self.fault:  # the simulation encodes once: only scheduling and writes stay real
            self.simulated_png = self.simulated_png or encode_png(image)
        data = self.simulated_png or encode_png(image)
        for attempt in range(TRANSIENT_RETRIES + 1):
            try:
                self.store.put_bytes(key, data)
                return f"{len(data)}:{hashlib.sha256(data).hexdigest()}"
            except StorageError:
                if attempt == TRANSIENT_RETRIES:
                    raise
                time.sleep(0.5 * 2**attempt)

    def _compressed(self, image: np.ndarray) -> bytes:
        """The shard layout's zstd frame of ``image``; under ``simulate_ms`` the first frame again (the simulation
        makes encoding idle time too, as it does for PNGs)."""
        if "simulate_ms" not in self.fault:
            return shards.compress(image)
        self.simulated_frame = self.simulated_frame or shards.compress(image)
        return self.simulated_frame

    # -- poison structures ------------------------------------------------------------------------------------
    def _marker(self, key: str) -> dict[str, Any]:
        return _parse_marker(self.store.get_text(key) if self.store.exists(key) else None)

    def _count_timeout(self, key: str) -> None:
        """The watchdog's last act: count the timeout against the structure being drawn."""
        marker = self._marker(key)
        self.store.put_text(key, json.dumps({"crashes": marker.get("crashes", 0) + 1, "drawing": None}))

    def _start(self, material_id: str, first_view: int) -> str:
        """Check this structure's part of the batch against its attempt marker (counting a crash of the attempt
        before, :func:`died_drawing`) and mark it as being drawn; "" to go on, or the quarantine reason."""
        what = f"{material_id} (views from {first_view})"
        if not self.prefix:
            self.watchdog.arm(what)
            return ""
        key = attempt_key(self.prefix, material_id, first_view)
        self.watchdog.arm(what, lambda: self._count_timeout(key))
        marker = self._marker(key)
        crashes, drawing = marker.get("crashes", 0), marker.get("drawing")
        if drawing:
            crash = died_drawing(drawing)
            if crash:
                crashes += 1
                log.error("%s crashed the render actor (pid %s) while drawing:\n%s", what, drawing.get("pid"), crash)
            else:
                log.warning("the attempt at %s by pid %s on %s ended without a crash of its own (killed from "
                            "outside: OOM killer, lost node); not counted", what, drawing.get("pid"),
                            drawing.get("host"))  # fmt: skip
        if crashes >= MAX_CRASHES:
            return (
                f"its render crashed or exceeded the {self.cfg.structure_timeout_s:.0f} s time budget "
                f"(render.structure_timeout_s) {crashes} times; rerun with --retry-quarantined to try again"
            )
        me = {"host": socket.gethostname(), "pid": os.getpid(), "crash_log": crash_log()}
        self.store.put_text(key, json.dumps({"crashes": crashes, "drawing": me}))
        return ""

    def _finish(self, material_id: str, first_view: int, reason: str) -> None:
        self.watchdog.disarm()
        if self.prefix and not reason:
            with contextlib.suppress(OSError, StorageError):
                self.store.fs.delete_file(self.store.path(attempt_key(self.prefix, material_id, first_view)))

    # -- the batch --------------------------------------------------------------------------------------------
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        mids = [str(m) for m in batch["material_id"]]
        errors: list[str] = [""] * len(mids)
        sums: list[str] = [""] * len(mids)
        pixels: list[bytes] = [b""] * len(mids)
        done = np.zeros(len(mids), dtype=np.float64)
        pending: list[tuple[int, Future]] = []
        current, first_view, reason = None, 0, ""
        for i, (mid, quat, key, view) in enumerate(
            zip(mids, batch["quaternion"], batch["image_key"], batch["view"], strict=True)
        ):
            if mid != current:
                if current is not None:
                    self._finish(current, first_view, reason)
                current, first_view = mid, int(view)
                reason = self._start(mid, first_view)
            if reason:
                errors[i] = reason
                done[i] = time.time()
                continue
            image, errors[i] = self._image(mid, np.asarray(quat, dtype=np.float64))
            if image is not None and self.return_images:
                pixels[i] = self._compressed(image)  # the shard's stored form: the driver only assembles
            if image is None or (self.return_images and not str(key)):
                done[i] = time.time()
                self.n_written += image is not None
                _maybe_fault(self.fault, self.n_written)
            else:
                pending.append((i, self.pool.submit(self._write, str(key), image)))
            pending = self._collect(pending, done, sums, wait=len(pending) > 2 * WRITER_THREADS)
        if current is not None:
            self._collect(pending, done, sums, wait=True, all_=True)
            self._finish(current, first_view, reason)
        extra = {"image": np.asarray(pixels, dtype=object)} if self.return_images else {}
        return {
            **extra,
            "material_id": batch["material_id"],
            "view": batch["view"],
            "image_key": batch["image_key"],
            "checksum": np.asarray(sums, dtype=object),
            "error": np.asarray(errors, dtype=object),
            "t_done": done,
            "actor": np.full(len(mids), os.getpid(), dtype=np.int64),
        }

    def _collect(
        self, pending: list[tuple[int, Future]], done: np.ndarray, sums: list[str], wait: bool, all_: bool = False
    ) -> list[tuple[int, Future]]:
        """Reap finished writes (a write error re-raises here and fails the task); bound the queue when ``wait``."""
        left = []
        for n, (i, fut) in enumerate(pending):
            if fut.done() or all_ or (wait and n == 0):
                sums[i] = fut.result()
                done[i] = time.time()
                self.n_written += 1
                _maybe_fault(self.fault, self.n_written)
            else:
                left.append((i, fut))
        return left

    def __del__(self) -> None:
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.shutdown(wait=False)  # __call__ already waited for its writes
        renderer = getattr(self, "renderer", None)
        if renderer is not None:
            renderer.close()
