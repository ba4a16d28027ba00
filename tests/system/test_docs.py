"""The documentation: the configuration page is generated from the code and current, the site builds with
``mkdocs build --strict`` (broken links between pages fail it), every repository path the docs name exists, and
README's sample of the quickstart's summary is what the current code prints from the committed record."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.study import study_script

ROOT = Path(__file__).resolve().parents[2]
MKDOCS = [sys.executable, "-m", "mkdocs", "build", "--strict"]  # not --quiet: it hides the warnings strict counts
TOP = ("pipelines", "docs", "bench", "tests", "infra", "jobs", "platform", "mlflow")
PATH = re.compile(r"`((?:" + "|".join(TOP) + r")/[A-Za-z0-9_./-]+)`")
TEST_ID = re.compile(r"`(tests/[A-Za-z0-9_/]+\.py)::(\w+)")  # a test the docs name as evidence


def _build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"}
    cmd = [*MKDOCS, "-f", str(root / "mkdocs.yml"), "-d", str(site)]
    return subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300, env=env)


def test_configuration_page_is_generated_and_current() -> None:
    """A config field or environment variable added without regenerating the page fails here."""
    done = subprocess.run(
        [sys.executable, "docs/gen_config_page.py", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr + "\nrun: python docs/gen_config_page.py"


def test_architecture_table_of_rooms_is_generated_and_current() -> None:
    """docs/architecture.md's table of rooms is written from crystalvision.core.layers and the package's modules: a
    room, sign or module changed without regenerating it fails here (also under a python without the packages)."""
    done = subprocess.run(
        [sys.executable, "-S", "docs/gen_layers_table.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr + "\nrun: python docs/gen_layers_table.py"
    spec = importlib.util.spec_from_file_location("gen_layers_table", ROOT / "docs" / "gen_layers_table.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    page = (ROOT / "docs" / "architecture.md").read_text()
    stale = page.replace("| 0 | `core/` |", "| 1 | `core/` |")
    assert stale != page and gen.page(stale) == page


def test_site_builds_strict(tmp_path: Path) -> None:
    pytest.importorskip("material")
    done = _build(ROOT, tmp_path / "site")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "configuration" / "index.html").is_file()


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    pytest.importorskip("material")
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", copy / "docs", ignore=shutil.ignore_patterns("*.json", "*.py", "*.cmd"))
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    page = copy / "docs" / "install.md"
    page.write_text(page.read_text() + "\nSee [nowhere](no-such-page.md).\n")
    done = _build(copy, tmp_path / "site")
    assert done.returncode != 0 and "no-such-page.md" in done.stdout + done.stderr


def test_every_repository_path_the_docs_name_exists() -> None:
    pages = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").rglob("*.md"))]
    missing = []
    for page in pages:
        for path in PATH.findall(page.read_text()):
            if "<" in path or "*" in path or path.endswith("/"):
                continue
            module = ROOT / (path.split(".")[0] + ".py")  # jobs/_common.run_command: a function in a file
            if not (ROOT / path).exists() and not (ROOT / path.rstrip(".")).exists() and not module.exists():
                missing.append(f"{page.relative_to(ROOT)}: {path}")
    assert not missing, missing


def test_every_test_the_docs_name_exists() -> None:
    """A page that names ``tests/<file>.py::<test>`` (the failure-modes table: which test catches which fault)
    names a test function that is there: renaming or removing a test must update the page."""
    pages = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").rglob("*.md"))]
    named = {(page, path, name) for page in pages for path, name in TEST_ID.findall(page.read_text())}
    assert len(named) > 20, "the pattern finds the tests the failure-modes page names"
    missing = [f"{page.relative_to(ROOT)}: {path}::{name}" for page, path, name in sorted(named)
               if not (ROOT / path).is_file() or f"def {name}(" not in (ROOT / path).read_text()]  # fmt: skip
    assert not missing, missing


def test_every_config_key_describes_itself_in_the_models() -> None:
    """The configuration page's descriptions come from the pydantic models, not from the generator."""
    from crystalvision.core.config import PipelineConfig

    spec = importlib.util.spec_from_file_location("gen_config_page", ROOT / "docs" / "gen_config_page.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert not gen.FALLBACK
    rows = gen.config_rows(PipelineConfig, "")
    for name, model in gen.sections(PipelineConfig):
        rows += gen.config_rows(model, f"{name}.")
    assert len(rows) > 80
    undescribed = [r[0] for r in rows if not r[3] or r[3].startswith("Allowed")]
    assert not undescribed, f"add a Field(description=...) to: {undescribed}"


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["mlflow/launch.py", "embedded"], "python mlflow/launch.py"),
        (["docs/gen_config_page.py"], "python docs/gen_config_page.py"),
        (["-m", "jobs.snapshot"], "ray start"),
    ],
    ids=["launcher", "config-page", "ray-job"],
)
def test_scripts_under_a_python_without_the_packages_name_the_fix(args: list[str], names: str) -> None:
    """The system's python (here: this one without site-packages, -S) gets one line naming the environment to
    use, exit 2, not a traceback or MLflow's `No module named mlflow.__main__`."""
    done = subprocess.run([sys.executable, "-S", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and "source .venv/bin/activate" in done.stderr and names in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def _readme_quickstart() -> ModuleType:
    return study_script("readme_quickstart")


def test_readme_quickstart_sample_is_printed_from_the_record_by_the_current_code() -> None:
    """README's sample of `make run`'s summary is what the current summary code prints from the committed record: a
    change of the summary's format or of the record that README does not follow fails here."""
    qs = _readme_quickstart()
    readme = (ROOT / "README.md").read_text()
    assert qs.update(readme) == readme, "run: python docs/study/readme_quickstart.py --readme README.md"


def test_readme_quickstart_follows_the_record(tmp_path: Path) -> None:
    """On a copy of the record: a changed number and run id reach the block, the run's home never does, and a .cmd
    without its date, home or log line is refused."""
    qs = _readme_quickstart()
    record = json.loads(qs.RECORD.read_text())
    record["metrics"]["test_struct_acc_crystal_system"], record["run_id"] = 0.987654, "0123456789abcdef"
    copy = tmp_path / "quickstart.json"
    copy.write_text(json.dumps(record))
    cmd = qs.RECORD.with_suffix(".cmd").read_text()
    copy.with_suffix(".cmd").write_text(cmd)
    text = qs.update("a\n<!-- readme-quickstart:start -->\nx\n<!-- readme-quickstart:end -->\nb\n", copy)
    home = qs.run_info(copy)["home"]
    assert "0.988" in text and "run       0123456789abcdef" in text and "model/structure" in text
    assert home not in text and f"{qs.HOME}/mlflow.db" in text and "\nx\n" not in text
    assert f"`{tmp_path.as_posix()}/quickstart.json`" in text  # outside the repository: the path as given
    copy.with_suffix(".cmd").write_text("\n".join(x for x in cmd.splitlines() if not x.startswith("# log:")))
    with pytest.raises(SystemExit, match="a '# log:' line"):
        qs.block(copy)
