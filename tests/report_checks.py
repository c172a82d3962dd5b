"""What a rendered class report must show, asked of headless Chromium (tests/headless_chromium.py): shared by
the report's own tests and by the runs whose reports are checked (the corpus batch, the answer keys' real run).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from grader.class_report import SECTIONS
from headless_chromium import Chromium, chromium_path

PLOTS = 5   # totals, accuracy, F1, reported against measured, run time


def require_chromium() -> None:
    """Skip without Chromium, except where CI requires the browser tests (KIT_REQUIRE_BROWSER)."""
    if chromium_path() is None:
        if os.environ.get("KIT_REQUIRE_BROWSER"):
            pytest.fail("chromium is missing, and CI requires the browser tests (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")


RENDERED = """(() => {
  const sections = %s.map(id => [id, !!document.getElementById(id) && !!document.getElementById(id).querySelector("h2")]);
  const images = Array.from(document.images).map(img => ({ok: img.complete && img.naturalWidth > 0,
                                                            width: img.naturalWidth, src: img.src.slice(0, 30)}));
  const links = Array.from(document.querySelectorAll("a[href]")).map(a => a.getAttribute("href"));
  const anchors = links.filter(h => h.startsWith("#")).map(h => [h, !!document.getElementById(decodeURIComponent(h.slice(1))) || !!document.getElementById(h.slice(1))]);
  return {sections, images, links, anchors, title: document.title, pwned: window.PWNED === undefined ? null : window.PWNED,
          scripts: document.scripts.length, summaries: document.querySelectorAll("h2").length,
          rows: document.querySelectorAll("#students-table tbody tr").length,
          flags: document.querySelectorAll("#flags tr.flag").length,
          width: document.documentElement.scrollWidth};
})()"""


def rendered(tab) -> dict:
    return tab.evaluate(RENDERED % json.dumps([anchor for anchor, _ in SECTIONS]))


def assert_renders(tab, report: Path, students: int) -> dict:
    page = rendered(tab)
    assert all(present for _, present in page["sections"]), page["sections"]
    assert page["summaries"] == len(SECTIONS)
    assert page["images"] and all(image["ok"] for image in page["images"]), page["images"]
    assert all(found for _, found in page["anchors"]), [a for a in page["anchors"] if not a[1]]
    feedback = [href for href in page["links"] if not href.startswith("#")]
    assert feedback, "no link to a feedback page"
    for href in feedback:   # relative links, each to a page that is there
        assert not urlparse(href).scheme and not href.startswith("/"), href
        assert (report.parent / unquote(href)).is_file(), href
    assert page["rows"] == students
    assert page["pwned"] is None and page["scripts"] == 1
    assert not [line for line in tab.console() if line.startswith(("error", "warning", "exception"))], tab.console()
    return page




def assert_report_renders(report: Path, students: int) -> dict:
    """Open ``report`` in a fresh headless Chromium and check it as ``assert_renders`` does."""
    require_chromium()
    with Chromium() as browser:
        return assert_renders(browser.open(report.as_uri()), report, students)
