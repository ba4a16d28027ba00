"""`crystalvision render` as a person runs it: stage progress, a short summary at the end, JSON only with
``--json``, and Ctrl-C that takes every process the command started with it (Ray's workers and agents included).

Each command runs as ``python -m crystalvision.app.cli`` in its own session (tests/support/commands.py keeps a list of
every process it started); after it exits none of them may still run. Rendering starts no Ray Train run: this file
runs in the light lane of tests/run_files.py. The sweep's side: test_long_commands.py.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest

from crystalvision.app.summary import MAX_LINES
from tests.support.commands import TINY, Command, interrupted, summary_lines

pytestmark = pytest.mark.slow


def test_render_shows_progress_ends_in_a_summary_and_stops_whole(cv_home: Path) -> None:
    """One home, as a person would go: a render stopped with Ctrl-C (exit 130, no process left), run again to the
    end (progress, a summary, no JSON), and with --json (JSON only)."""
    home = cv_home
    render = ["render", "-c", "pipelines/quickstart.yaml"]
    # a render long enough that Ctrl-C lands inside it (240 images), not after it
    stopped = Command(home, "render-1", render, [*TINY, "render.views_per_structure=40", "render.image_size=96"])
    interrupted(stopped, signal.SIGINT, lambda: "render    0/" in stopped.stderr(), "render progress")

    made = Command(home, "render-2", render, TINY)
    assert made.finish() == 0, made.report()
    assert made.stdout() == "", "no JSON without --json"
    screen = made.stderr()
    assert re.search(r"^render\s+12/12 img", screen, flags=re.M), screen  # progress
    summary = summary_lines(screen, "crystalvision: render finished")
    assert len(summary) <= MAX_LINES and not any(line.lstrip().startswith(("{", '"')) for line in summary), screen
    assert re.search(r"12 images \(\d+ new(, \d+ already there)?\), 0 structures quarantined", summary[1]), summary
    assert any(line.startswith("images") and "/renders/" in line for line in summary)

    as_json = Command(home, "render-3", [*render, "--json"], TINY)
    assert as_json.finish() == 0, as_json.report()
    result = json.loads(as_json.stdout())
    assert result["render_n_images"] == 12 and result["render_n_skipped"] == 12
    assert "/renders/" in result["render_uri"] and "{" not in as_json.stderr()
