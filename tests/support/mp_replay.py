"""A local stand-in for the Materials Project API that replays recorded answers to the real ``MPRester``.

It serves the two endpoints crystalvision uses, in the JSON shape mp-api 0.46 expects:

* ``GET /heartbeat`` -> ``{"db_version", "version" (emmet), "access_controlled_batch_ids"}``
* ``GET /materials/summary/`` -> ``{"data": [...], "meta": {"total_doc", ...}}`` honouring ``chemsys``,
  ``elements``, ``nelements_min/max``, ``_fields``, ``_limit`` and ``_skip`` (mp-api paginates with them).

Documents are built from records of the bundled snapshot. Tests switch the served database version with
:meth:`MPReplay.publish`, and make the next requests fail with :meth:`MPReplay.fail_next` (429/503 ...).
"""

from __future__ import annotations

import gzip
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

EMMET_VERSION = "0.87.3"
BUNDLED_STRUCTURES = Path(__file__).resolve().parents[2] / "platform/crystalvision/data/snapshots/lmno/structures.json"
SPACE_STRUCTURES = BUNDLED_STRUCTURES.parents[1] / "lmno-space" / "structures.json.gz"
CRYSTAL_SYSTEM_ENUM = {s: s.capitalize() for s in ("triclinic", "monoclinic", "orthorhombic", "tetragonal")} | {
    "trigonal": "Trigonal",
    "hexagonal": "Hexagonal",
    "cubic": "Cubic",
}


def summary_doc(record: dict[str, Any]) -> dict[str, Any]:
    """A ``materials/summary`` document (the fields crystalvision asks for) from a snapshot record."""
    elements = sorted({sp["element"] for site in record["structure"]["sites"] for sp in site["species"]})
    return {
        "material_id": record["material_id"],
        "formula_pretty": record["formula"],
        "nsites": record["nsites"],
        "elements": elements,
        "nelements": len(elements),
        "chemsys": "-".join(elements),
        "structure": record["structure"],
        "band_gap": record["band_gap"],
        "energy_above_hull": record["energy_above_hull"],
        "formation_energy_per_atom": record.get("formation_energy_per_atom"),
        "symmetry": {
            "crystal_system": CRYSTAL_SYSTEM_ENUM[record["crystal_system"]],
            "symbol": record["spacegroup_symbol"],
            "number": record["spacegroup_number"],
            "symprec": 0.1,
            "version": "2.5.0",
        },
    }


def bundled_docs(n: int = 4) -> list[dict[str, Any]]:
    """The first ``n`` unflagged Li-Mn-Ni-O materials of the bundled snapshot as summary documents."""
    docs = [summary_doc(r) for r in json.loads(BUNDLED_STRUCTURES.read_text()) if not r["flags"]]
    return [d for d in docs if d["chemsys"] == "Li-Mn-Ni-O"][:n]


def space_docs(per_system_size: int = 1) -> list[dict[str, Any]]:
    """The first ``per_system_size`` unflagged materials of each size (1-4 elements) of the bundled ``lmno-space``
    snapshot as summary documents."""
    docs = [summary_doc(r) for r in json.loads(gzip.decompress(SPACE_STRUCTURES.read_bytes())) if not r["flags"]]
    return [d for n in range(1, 5) for d in [d for d in docs if d["nelements"] == n][:per_system_size]]


@dataclass
class Request:
    """One request the server answered: path, query parameters, headers, status."""

    path: str
    params: dict[str, str]
    headers: dict[str, str]
    status: int


@dataclass
class MPReplay:
    """State of the replay server (thread-safe enough for tests: one lock around everything)."""

    db_version: str
    docs: list[dict[str, Any]]
    failures: deque[tuple[int, str]] = field(default_factory=deque)
    requests: list[Request] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, db_version: str, docs: list[dict[str, Any]]) -> None:
        """Serve a new database version with these documents from now on."""
        with self._lock:
            self.db_version, self.docs = db_version, docs

    def fail_next(self, *statuses: int, path: str = "/") -> None:
        """Answer the next requests whose path starts with ``path`` with these HTTP error statuses, in order."""
        with self._lock:
            self.failures.extend((s, path) for s in statuses)

    def answer(self, path: str, params: dict[str, str], headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Status and JSON body for one request."""
        with self._lock:
            status, body = self._answer(path, params)
            self.requests.append(Request(path, params, headers, status))
            return status, body

    def _answer(self, path: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if self.failures and path.startswith(self.failures[0][1]):
            status = self.failures.popleft()[0]
            return status, {"detail": f"replayed failure {status}"}
        if path == "/heartbeat":
            return 200, {"db_version": self.db_version, "version": EMMET_VERSION, "access_controlled_batch_ids": []}
        if path.rstrip("/") == "/materials/summary":
            return 200, self._summary(params)
        return 404, {"detail": f"no replay for {path}"}

    def _summary(self, params: dict[str, str]) -> dict[str, Any]:
        docs = [d for d in self.docs if _matches(d, params)]
        skip, limit = int(params.get("_skip", 0)), int(params.get("_limit", 1000))
        fields = params.get("_fields", "").split(",") if params.get("_fields") else None
        page = [{k: v for k, v in d.items() if fields is None or k in fields} for d in docs[skip : skip + limit]]
        return {"data": page, "meta": {"total_doc": len(docs), "max_limit": 1000, "db_version": self.db_version}}


def _matches(doc: dict[str, Any], params: dict[str, str]) -> bool:
    if "chemsys" in params and not any(sorted(c.split("-")) == doc["elements"] for c in params["chemsys"].split(",")):
        return False
    if "elements" in params and not set(params["elements"].split(",")) <= set(doc["elements"]):
        return False
    lo, hi = params.get("nelements_min"), params.get("nelements_max")
    return not ((lo and doc["nelements"] < int(lo)) or (hi and doc["nelements"] > int(hi)))


def _handler(state: MPReplay) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            status, body = state.answer(parts.path, params, dict(self.headers.items()))
            blob = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(blob)))
            if status == 429:
                self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(blob)

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read state.requests
            pass

    return Handler


class ReplayServer:
    """Context manager running an :class:`MPReplay` on 127.0.0.1 on a free port."""

    def __init__(self, db_version: str, docs: list[dict[str, Any]]):
        self.state = MPReplay(db_version=db_version, docs=docs)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.state.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> MPReplay:
        self._thread.start()
        return self.state

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
