"""Check that a report renders in a real browser: every image decoded, the page not blank.

Uses headless Chromium (``chromium`` or ``google-chrome`` on PATH; Debian: ``apt-get install
chromium``). Run it on any report::

    python -m reports.render_check out/report/report.html [--screenshot shot.png]

It loads a copy of the page with a small script that counts the images the browser failed to
decode, then takes a screenshot of the page itself and checks that it is not blank.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from workloads.errors import ArchsimError

__all__ = ["RenderCheck", "RenderError", "find_browser", "check_report_renders"]

_PROBE = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.filter((img) => !(img.complete && img.naturalWidth > 0));
  document.body.dataset.images = images.length;
  document.body.dataset.broken = broken.map((img) => img.alt || img.src.slice(0, 40)).join("|");
  document.body.dataset.loaded = "yes";
});
</script>"""


class RenderError(ArchsimError):
    """No browser was found, or it failed to load the page."""


@dataclass(frozen=True)
class RenderCheck:
    """What the browser saw: images on the page, those it could not decode, the screenshot."""

    images: int
    broken: tuple[str, ...]
    screenshot: Path | None
    ink_fraction: float

    @property
    def ok(self) -> bool:
        return self.images > 0 and not self.broken and self.ink_fraction > 0.02


def find_browser() -> str | None:
    """Path of a headless-capable Chromium, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _browser(browser: str, *args: str, timeout_s: float) -> subprocess.CompletedProcess:
    # --no-sandbox: CI containers run as root, where Chromium's sandbox refuses to start.
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--virtual-time-budget=10000", *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=True)
    except subprocess.CalledProcessError as exc:
        raise RenderError(
            f"{browser} failed (exit {exc.returncode}): {exc.stderr[-500:]}"
        ) from None
    except subprocess.TimeoutExpired:
        raise RenderError(f"{browser} did not finish within {timeout_s:.0f} s") from None


def check_report_renders(html: str | Path, screenshot: str | Path | bool | None = None,
                         width: int = 1280, height: int = 2400,
                         timeout_s: float = 90) -> RenderCheck:
    """Load ``html`` in headless Chromium, count undecodable images and screenshot it.

    Raises
    ------
    RenderError
        When no Chromium is installed or it cannot load the page.

    The screenshot goes to ``screenshot`` (default: ``<report>.screenshot.png`` beside it);
    ``screenshot=False`` checks the images only.
    """
    from matplotlib.image import imread

    browser = find_browser()
    if browser is None:
        raise RenderError("no headless Chromium found (install the 'chromium' package)")
    html = Path(html).resolve()
    # The probe runs on a copy next to the original, so relative links resolve the same.
    probe = html.with_name(f".{html.stem}.probe.html")
    probe.write_text(html.read_text().replace("</body>", _PROBE + "</body>", 1))
    try:
        dom = _browser(browser, "--dump-dom", probe.as_uri(), timeout_s=timeout_s).stdout
    finally:
        probe.unlink(missing_ok=True)
    body = re.search(r"<body([^>]*)>", dom)
    attrs = dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(1) if body else ""))
    if attrs.get("loaded") != "yes":
        raise RenderError(f"{html}: the page did not finish loading in the browser")
    broken = tuple(b for b in attrs.get("broken", "").split("|") if b)
    if screenshot is False:
        return RenderCheck(int(attrs.get("images", 0)), broken, None, 1.0)
    shot = Path(screenshot) if screenshot else html.with_name(f"{html.stem}.screenshot.png")
    _browser(browser, f"--screenshot={shot.resolve()}", f"--window-size={width},{height}",
             html.as_uri(), timeout_s=timeout_s)
    pixels = imread(shot)[..., :3]
    # Fraction of pixels that are not (near) white: a blank or failed page has almost none.
    ink = float((pixels.mean(axis=2) < 0.92).mean())
    return RenderCheck(int(attrs.get("images", 0)), broken, shot, ink)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check that an archsim report renders.")
    parser.add_argument("html", type=Path)
    parser.add_argument("--screenshot", type=Path, help="where to keep the screenshot")
    args = parser.parse_args(argv)
    try:
        check = check_report_renders(args.html, args.screenshot)
    except RenderError as exc:
        print(f"render check: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.html}: {check.images} images, {len(check.broken)} broken"
          f"{' (' + ', '.join(check.broken) + ')' if check.broken else ''}; screenshot "
          f"{check.screenshot} ({check.ink_fraction:.0%} non-white)")
    return 0 if check.ok else 1


if __name__ == "__main__":
    sys.exit(main())
