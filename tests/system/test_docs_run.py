"""The documentation runs as written: every shell, console and Python block of README.md, CONTRIBUTING.md and
``docs/`` is run in the suite, in page order, in one shell set up as the docs say (``source .venv/bin/activate``,
from the repository root) on a fresh state folder and a fresh HOME.

The blocks share one copy of the checkout (symbolic links to every top-level entry except the state folder), so
README's ``make run`` trains the quickstart model once and the later blocks predict and serve with it. A block runs
with ``bash -e -o pipefail`` (the first failing command fails it); a console block runs each ``$`` command and
must print the first line of its documented output (whitespace aside); a Python block runs as a saved script. A
block identical to one already run is not run again. Servers a block leaves running are stopped with its process
group. After the blocks, what a person sees after ``make run`` is checked: its terminal output, then the run and
the model in the MLflow UI whose command that output prints (REST API and headless Chromium).

A block that cannot run here carries a marker on the line above its fence, with a category and the reason::

    <!-- docs-test: skip (long: three pipelines of 3,472 images each, hours on 2 cores) -->

Categories: ``long`` (more than a few minutes, or what other tests already start), ``network`` (a server or
cluster that is not here), ``MP key``, ``GPU``, ``synopsis`` (placeholders, not a command).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.support.browser import browser, page_text, require_browser
from tests.support.procs import free_port, wait_http

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUNNABLE = {"bash": "shell", "sh": "shell", "shell": "shell", "console": "console", "python": "python"}
CATEGORIES = ("long", "network", "MP key", "GPU", "synopsis")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*skip\s*\((?P<reason>.*)\)\s*-->\s*$")
NOT_COPIED = {".crystalvision", ".git", "site", "mlruns", ".pytest_cache", ".ruff_cache", "request.json"}
# The test process's settings that a reader's shell does not have (the suite's own, or an outer run's).
DROPPED = ("PYTHONPATH", "VIRTUAL_ENV", "RAY_ADDRESS", "RAY_AUTH_MODE", "CRYSTALVISION_", "MLFLOW_", "AWS_")
BLOCK_TIMEOUT_S = 600  # not a speed goal: README's `make run` trains the quickstart, on 2 shared cores


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository root
    line: int  # of the opening fence, 1-based
    kind: str  # shell, console or python
    text: str
    skip: str | None  # the marker's reason

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"


def parse_blocks(text: str, page: str) -> list[Block]:
    """The runnable fenced blocks of a Markdown page (``bash``, ``sh``, ``shell``, ``console``, ``python``)."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), len(lines))
        kind = RUNNABLE.get(m["lang"].lower())
        if kind is not None:
            above = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            marker = MARKER.match(above)
            body = textwrap.dedent("\n".join(lines[i + 1 : end]))
            blocks.append(Block(page, i + 1, kind, body + "\n", marker["reason"].strip() if marker else None))
        i = end + 1
    return blocks


def all_blocks() -> list[Block]:
    return [b for page in PAGES for b in parse_blocks(page.read_text(), str(page.relative_to(ROOT)))]


def console_commands(text: str) -> list[tuple[str, str | None]]:
    """A console block's ``$`` commands (continuation lines joined) and the first line of each one's output."""
    out: list[tuple[str, str | None]] = []
    lines, i = text.splitlines(), 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            i += 1
            continue
        cmd = [lines[i][2:]]
        while cmd[-1].rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            cmd.append(lines[i])
        i += 1
        first = lines[i] if i < len(lines) and not lines[i].startswith("$ ") else None
        out.append(("\n".join(cmd), first))
    return out


def _words(text: str) -> str:
    return " ".join(text.split())


def make_copy(dest: Path) -> Path:
    """A checkout to run the docs in: links to every top-level entry, but a state folder of its own."""
    dest.mkdir(parents=True)
    for entry in ROOT.iterdir():
        if entry.name not in NOT_COPIED:
            (dest / entry.name).symlink_to(entry)
    return dest


def reader_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(DROPPED)}
    return env | {"HOME": str(home)}


def _group_alive(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def stop_group(pgid: int, grace: float = 20) -> None:
    """Stop what a block left running (a server started with ``&``): SIGTERM to its process group, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _group_alive(pgid):
            return


def run_shell(script: str, cwd: Path, env: dict[str, str], timeout: float = BLOCK_TIMEOUT_S) -> tuple[int, str]:
    """``script`` after ``source .venv/bin/activate``, with bash -e -o pipefail; its return code and output. The
    output goes through a file: a server the script leaves running keeps a pipe open, not the script's end."""
    log_path = cwd / ".docs-block.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            ["bash", "-e", "-o", "pipefail", "-c", f"source .venv/bin/activate\n{script}"],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        code = 124
    finally:
        stop_group(proc.pid)
        proc.wait()
    out = log_path.read_text(errors="replace")
    return code, out + (f"\n[timed out after {timeout:.0f} s]" if code == 124 else "")


def run_block(block: Block, cwd: Path, env: dict[str, str]) -> str:
    """Run one block as written; fail with its output when a command fails or a console output is not printed.
    Its output (a console block's commands' outputs, one after the other)."""
    if block.kind == "python":
        script = cwd / f"docs_block_{re.sub(r'[^A-Za-z0-9]+', '_', block.name)}.py"
        script.write_text(block.text)
        code, out = run_shell(f"python {script.name}", cwd, env)
        assert code == 0, f"{block.name}: python exited {code}:\n{out[-4000:]}"
        return out
    if block.kind == "shell":
        code, out = run_shell(block.text, cwd, env)
        assert code == 0, f"{block.name}: exited {code}:\n{out[-4000:]}"
        return out
    commands = console_commands(block.text)
    assert commands, f"{block.name}: a console block without a `$ ` command"
    outputs = []
    for cmd, first in commands:
        code, out = run_shell(cmd, cwd, env)
        assert code == 0, f"{block.name}: `{cmd}` exited {code}:\n{out[-4000:]}"
        if first is not None:
            assert _words(first) in _words(out), f"{block.name}: `{cmd}` did not print {first!r}:\n{out[-4000:]}"
        outputs.append(out)
    return "".join(outputs)


BLOCKS = all_blocks()


@dataclass
class Reader:
    """The reader's shell: a checkout with a fresh state folder, a fresh HOME, which blocks already ran (a block's
    text -> its name) and what each printed (its name -> its output)."""

    cwd: Path
    env: dict[str, str]
    ran: dict[str, str] = field(default_factory=dict)
    printed: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Reader:
    base = tmp_path_factory.mktemp("reader")
    home = base / "home"
    home.mkdir()
    return Reader(make_copy(base / "checkout"), reader_env(home))


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[b.name for b in BLOCKS])
def test_block_runs_as_written(block: Block, reader: Reader) -> None:
    if block.skip is not None:
        pytest.skip(f"{block.name}: {block.skip}")
    if block.text in reader.ran:
        pytest.skip(f"{block.name}: the same commands as {reader.ran[block.text]}, run there")
    reader.ran[block.text] = block.name
    reader.printed[block.name] = run_block(block, reader.cwd, reader.env)


MAKE_RUN = next(b for b in BLOCKS if b.page == "README.md" and re.search(r"^make run\b", b.text, re.M))
QUICKSTART_MODEL = "lmno-efficientnet-b0-quickstart"
NOISE = ("PlacementGroupCleaner", "core_worker", "Running Dataset", "DeprecationWarning", "(pid=")


@pytest.mark.slow
def test_after_make_run_a_person_sees_a_short_summary_and_a_self_explaining_mlflow_ui(reader: Reader) -> None:
    """What a person sees after README's `make run`, in a terminal that is not a TTY (CI, `ray job` logs): the
    pipeline's part of the output is short, has no progress frames and none of Ray's internals (those go to the log
    file) and ends in its summary; the `mlflow ui` command that summary prints serves the run and the registered
    model, which explain themselves (REST API, then the pages in headless Chromium)."""
    require_browser()
    screen = reader.printed.get(MAKE_RUN.name)
    assert screen is not None, f"{MAKE_RUN.name} (`make run`) has not run before this test"
    lines = screen.splitlines()
    start = next(i for i, line in enumerate(lines) if "crystalvision pipeline run" in line)  # make echoes it
    pipeline = lines[start + 1 : next(i for i, line in enumerate(lines) if line.startswith("next: "))]
    assert len(pipeline) <= 60 and "\r" not in screen, screen
    assert pipeline[-1].startswith("log "), screen  # nothing after the summary (Ray stopped inside the quiet block)
    assert not [noise for noise in NOISE if noise in screen], screen
    assert any(line.startswith("render") for line in pipeline) and any(line.startswith("train") for line in pipeline)
    assert "Ray" in Path(pipeline[-1].split()[-1]).read_text(errors="replace"), "Ray's lines went to the log file"
    said = {line.split()[0]: line.split(None, 1)[1] for line in pipeline if line.strip()}
    assert "majority" in screen and "1-NN" in screen and "crystal system acc" in screen
    assert said["model"].startswith(f"{QUICKSTART_MODEL} v1 -> champion"), said["model"]
    assert Path(said["report"]).name == "report.html" and Path(said["report"]).is_file()
    command = shlex.split(said["MLflow"])
    assert Path(command[0]).name == "mlflow" and command[1] == "ui" and "--backend-store-uri" in command, command
    port = free_port()
    command[command.index("--port") + 1] = str(port)
    shell = f"source .venv/bin/activate\nexec {shlex.join(command)}"  # in the activated shell the docs assume
    with (reader.cwd / "mlflow-ui.log").open("wb") as log:  # MLflow's job runner (GenAI jobs) is not needed here
        ui = subprocess.Popen(["bash", "-c", shell], cwd=reader.cwd, stdout=log, stderr=subprocess.STDOUT,
                              env=reader.env | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                              start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", timeout=120, alive=lambda: ui.poll() is None)
        _run_and_model_explain_themselves(url, said["run"])
    finally:
        stop_group(ui.pid, grace=3)  # its graceful stop is not under test here


def _api(url: str, path: str, **params: str) -> dict:
    answer = requests.get(f"{url}/api/2.0/mlflow/{path}", params=params, timeout=60)
    answer.raise_for_status()
    return answer.json()


def _run_and_model_explain_themselves(url: str, run_id: str) -> None:
    """The run's description, datasets and system metrics, the registered model and its first version, through the
    REST API; then the run's and the model's pages as a person opens them."""
    run = _api(url, "runs/get", run_id=run_id)["run"]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    description = tags["mlflow.note.content"]
    assert "quickstart" in description and "grouped" in description and "| band gap | R² |" in description
    inputs = run["inputs"]["dataset_inputs"]
    contexts = {next(t["value"] for t in i["tags"] if t["key"] == "mlflow.data.context"): i["dataset"] for i in inputs}
    assert set(contexts) == {"snapshot", "training"}
    snapshot_id = tags["snapshot_id"]
    assert contexts["snapshot"]["name"] == snapshot_id and contexts["snapshot"]["digest"]
    assert json.loads(contexts["training"]["source"])["uri"].endswith(".parquet")  # the render stage's labels table
    metric_keys = {m["key"] for m in run["data"]["metrics"]}
    assert any(k.startswith("system/cpu") for k in metric_keys), sorted(metric_keys)[:20]
    model = _api(url, "registered-models/get", name=QUICKSTART_MODEL)["registered_model"]
    assert "band gap" in model["description"] and "champion" in model["description"]
    version = _api(url, "model-versions/get", name=QUICKSTART_MODEL, version="1")["model_version"]
    vtags = {t["key"]: t["value"] for t in version["tags"]}
    assert vtags["training_snapshot"] == snapshot_id and vtags["split_protocol"] == "grouped"
    assert vtags["promote_metric"] and "CGCNN" in vtags["label_source.band_gap"]
    assert snapshot_id in version["description"]
    with browser() as driver:
        expect = ["Description", "quickstart: EfficientNet-B0", "Datasets", snapshot_id]
        text = page_text(driver, f"{url}/#/experiments/{run['info']['experiment_id']}/runs/{run_id}", expect)
        assert "Split by image" not in text  # the quickstart splits by structure
        page_text(driver, f"{url}/#/models/{QUICKSTART_MODEL}", ["Predicts band gap", "champion"])


def test_every_marker_names_a_category_and_a_reason() -> None:
    """`<!-- docs-test: skip (long: why) -->` above a runnable block; a marker anywhere else is a mistake."""
    marked = [b for b in BLOCKS if b.skip is not None]
    bad = [b.name for b in marked if not any(re.match(rf"{c}: .{{8}}", b.skip) for c in CATEGORIES)]
    assert not bad, f"a skip marker needs one of {CATEGORIES} and a reason: {bad}"
    n_markers = sum(len(re.findall(r"^\s*<!--\s*docs-test:", p.read_text(), re.M)) for p in PAGES)
    assert n_markers == len(marked), "a docs-test marker that is not right above a runnable block"
    assert len(BLOCKS) - len(marked) >= 8, "most blocks run"


def test_a_rotten_block_fails(tmp_path: Path) -> None:
    """What the runner must catch: a failing command that is not the last one, a console block whose documented
    output is not printed, a Python block that raises."""
    page = textwrap.dedent(
        """\
        ```bash
        false   # fails
        echo the last command succeeds
        ```

        ```console
        $ echo one two
        one    three
        ```

        ```python
        raise SystemExit("no")
        ```

        <!-- docs-test: skip (network: not here) -->
        ```bash
        exit 1
        ```
        """
    )
    blocks = parse_blocks(page, "rot.md")
    assert [b.kind for b in blocks] == ["shell", "console", "python", "shell"]
    assert blocks[3].skip == "network: not here"
    assert console_commands(blocks[1].text) == [("echo one two", "one    three")]
    env = reader_env(tmp_path)
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    for block, says in zip(blocks[:3], ("exited 1", "did not print", "python exited 1"), strict=True):
        with pytest.raises(AssertionError, match=says):
            run_block(block, tmp_path, env)
