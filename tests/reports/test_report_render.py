"""The HTML report in headless Chromium: every embedded image decodes, the page is not blank."""

from __future__ import annotations

import re

import pytest

from reports.render_check import check_report_renders, find_browser

pytestmark = pytest.mark.skipif(
    find_browser() is None,
    reason="headless Chromium is not installed (Debian: apt-get install chromium); "
           "python -m reports.render_check REPORT.html runs the same check by hand",
)


@pytest.fixture(scope="module")
def report(full_report):
    return full_report.html


@pytest.fixture(scope="module")
def figures(full_report) -> int:
    return len(full_report.figures) // 2  # PNG + SVG each


def test_report_renders_with_every_image(report, figures, tmp_path):
    check = check_report_renders(report, tmp_path / "shot.png")
    assert check.images == report.read_text().count("<img ") == figures
    assert check.broken == ()
    assert check.ink_fraction > 0.05, f"the screenshot is almost blank ({check.ink_fraction:.1%})"
    assert check.ok


def test_a_broken_image_is_caught(report, figures, tmp_path):
    html = report.read_text()
    # Corrupt the second embedded PNG: the browser cannot decode it.
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    broken = tmp_path / "broken.html"
    broken.write_text(html.replace(uris[1], "iVBORw0KGgoAAAANSUhEUgAAAAE" + "A" * 40))
    check = check_report_renders(broken, screenshot=False)
    assert check.images == figures and len(check.broken) == 1 and not check.ok
