"""The test browser itself: it must work in a test process that holds many descriptors.

CI's full run once handed Chromium's answer pipe a descriptor above 1023, where ``select()`` refuses to wait
(``ValueError: filedescriptor out of range``): two class-report tests failed for the browser, not the report.
"""
from __future__ import annotations

import os
import resource

import pytest

from headless_chromium import Chromium
from report_checks import require_chromium


def test_chromium_answers_when_its_pipe_gets_a_descriptor_above_1023():
    require_chromium()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"this machine allows {hard} open files, too few to reach descriptor 1024")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200) if hard == resource.RLIM_INFINITY
                                               else min(max(soft, 1200), hard), hard))
    filler = []
    try:
        while True:   # take every descriptor up to 1030, so that the browser's pipes come above 1023
            fd = os.open(os.devnull, os.O_RDONLY)
            filler.append(fd)
            if fd >= 1030:
                break
        with Chromium() as browser:
            assert browser.answers > 1023
            assert "product" in browser.send("Browser.getVersion")
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
