"""The documentation: the configuration page is generated from the code and current, the site builds with
``mkdocs build --strict`` (broken links between pages fail it), and every repository path the docs name exists."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MKDOCS = [sys.executable, "-m", "mkdocs", "build", "--strict"]  # not --quiet: it hides the warnings strict counts
TOP = ("pipelines", "docs", "bench", "tests", "infra", "jobs", "platform", "mlflow")
PATH = re.compile(r"`((?:" + "|".join(TOP) + r")/[A-Za-z0-9_./-]+)`")


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
