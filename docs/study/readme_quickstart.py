"""README's sample of the quickstart's end-of-run summary, printed from the committed record by the current code.

Reads ``records/quickstart.json`` (the result that ``crystalvision pipeline run pipelines/quickstart.yaml``, what
``make run`` calls, printed its summary from; ``--json`` prints the same dict) and ``quickstart.cmd`` beside it (the
run's date is its first dated comment, the run's ``CRYSTALVISION_HOME=`` is on its command line, its log file on a
``# log:`` line), prints the summary with :mod:`crystalvision.app.summary` as the CLI does off a terminal, the run's
home shown as ``.../.crystalvision`` (where ``make run`` keeps it) and the ``mlflow`` command as ``make run`` prints it,
and writes it between README's ``readme-quickstart`` markers (the marker rewriting and wrapping are
``readme_headline.py``'s).

Usage: ``python docs/study/readme_quickstart.py [docs/study/records/quickstart.json] [--readme README.md]`` (without
``--readme`` it prints the block).
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shlex
from pathlib import Path

import readme_headline as hl  # its path display, wrapping and (through space_table) marker rewriting

HERE = Path(__file__).resolve().parent
RECORD = HERE / "records" / "quickstart.json"
HOME = ".../.crystalvision"  # how the sample shows the run's CRYSTALVISION_HOME
MLFLOW = ".venv/bin/mlflow"  # the summary's mlflow command after `make run` (.venv not activated)


def run_info(record: Path) -> dict[str, str]:
    """The run's date, ``CRYSTALVISION_HOME`` and log file, from the ``.cmd`` beside ``record``."""
    cmd = record.with_suffix(".cmd")
    lines = cmd.read_text().splitlines()
    dates = [m.group(1) for line in lines if (m := re.match(r"#\s*(\d{4}-\d{2}-\d{2})", line))]
    logs = [line.split(":", 1)[1].strip() for line in lines if line.startswith("# log:")]
    run = next((shlex.split(x) for x in lines if "crystalvision pipeline run " in x and not x.startswith("#")), [])
    home = [w.split("=", 1)[1] for w in run if w.startswith("CRYSTALVISION_HOME=")]
    if not (dates and logs and home):
        raise SystemExit(f"{cmd}: needs a dated comment, a '# log:' line and CRYSTALVISION_HOME= on its command")
    return {"date": dates[0], "home": home[0].rstrip("/"), "log": logs[0]}


def sample(record: Path = RECORD) -> str:
    """The summary the run printed, as the current code prints it from the record (home and mlflow command as
    README shows them)."""
    from rich.console import Console

    from crystalvision.app import summary

    result, info = json.loads(record.read_text()), run_info(record)

    def shown(path: str | None) -> str | None:
        return None if path is None else path.replace(info["home"], HOME, 1)

    group = summary.summary_renderable(
        result,
        tracking_uri=f"sqlite:///{HOME}/mlflow.db",
        experiment_id=result.get("experiment_id"),
        label_source=result.get("label_source"),
        report_path=shown(result.get("report_path")),
        log_path=f"{HOME}/{info['log']}",
    )
    out = io.StringIO()
    Console(file=out, width=1000, soft_wrap=True).print(group)  # the CLI's console off a terminal
    text = out.getvalue().replace(f"MLflow    {summary.env_command('mlflow')} ui ", f"MLflow    {MLFLOW} ui ", 1)
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def block(record: Path = RECORD) -> str:
    """README's block: the sentence naming the run and its record, then the summary."""
    info = run_info(record)
    head = (
        f"It ends with a summary like this one ({info['date']}, same kind of machine; printed by the current code from "
        f"that run's record, `{hl.shown(record)}`, the run's home shown as `{HOME}`):"
    )
    return f"{hl.wrap(head, indent='')}\n\n```\n{sample(record)}```\n"


def update(text: str, record: Path = RECORD) -> str:
    """``text`` (README.md) with its ``readme-quickstart`` block rewritten from the record."""
    return hl.st.replace_between(text, "readme-quickstart", block(record))


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("record", type=Path, nargs="?", default=RECORD)
    ap.add_argument("--readme", type=Path, help="Rewrite this page's readme-quickstart block.")
    args = ap.parse_args(argv)
    if args.readme:
        text = update(args.readme.read_text(), args.record)
        args.readme.write_text(text)
        return text
    text = block(args.record)
    print(text, end="")
    return text


if __name__ == "__main__":
    main()
