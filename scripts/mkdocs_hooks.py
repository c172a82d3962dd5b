"""MkDocs hooks: pages made from the code and the repository, so that they never go stale.

- ``<!-- cli-reference -->`` in a page becomes the ``--help`` of every ``grade`` command, as the parser prints it;
- ``<!-- changelog -->`` becomes CHANGELOG.md (its first heading dropped: the page has its own; its links
  into docs/ made relative to the page).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("", "build", "one", "collect", "report", "gradescope build")   # `grade`, then each subcommand, in order


def command_help(command: str) -> str:
    arguments = command.split()
    done = subprocess.run([sys.executable, "-m", "grader.cli", *arguments, "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "COLUMNS": "100"})
    if done.returncode != 0:
        raise RuntimeError(f"grade {command} --help failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def cli_reference() -> str:
    return "\n".join(f"## `grade{' ' + command if command else ''}`\n\n```text\n{command_help(command).rstrip()}\n```\n"
                     for command in COMMANDS)


def changelog() -> str:
    lines = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8").splitlines()
    text = "\n".join(lines[1:] if lines and lines[0].startswith("# ") else lines)
    return text.replace("](docs/", "](")   # its links to docs/ pages, seen from inside docs/


def on_page_markdown(markdown, page, config, files):
    if "<!-- cli-reference -->" in markdown:
        markdown = markdown.replace("<!-- cli-reference -->", cli_reference())
    if "<!-- changelog -->" in markdown:
        markdown = markdown.replace("<!-- changelog -->", changelog())
    return markdown
