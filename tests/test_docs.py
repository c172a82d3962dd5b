"""The README's promises: its two commands are the ones CI and the real-run test run, and it stays short."""
import re

from grader.course import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def set_up_commands() -> list[str]:
    """The commands of the README's set-up block (the first bash block after "## Set-up")."""
    section = README.split("## Set-up", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)[1]
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_the_readme_gives_the_main_command_and_the_test_command():
    assert set_up_commands() == ["scripts/kit run --offline", "scripts/kit test"]


def test_ci_calls_the_readmes_test_command_and_builds_the_docs():
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert any(line.startswith("scripts/kit test") for line in ci)
    assert "scripts/kit docs" in ci


def test_the_readme_fits_a_screen_or_two():
    assert len(README.encode("utf-8")) <= 8 * 1024


def test_every_docs_page_is_in_the_navigation():
    navigation = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(path.name for path in (ROOT / "docs").glob("*.md"))
    assert pages and [page for page in pages if f": {page}" not in navigation] == []
