"""Render a report page in headless Chromium: its DOM (to check it) or a PNG screenshot (to show it).

Chromium is not a Python dependency; Debian's package (`apt-get install chromium`) is what CI
installs. The flags keep the browser off the network (the page is self-contained by design, and
the report test checks that nothing is fetched).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from netrazor.errors import ConfigError, NetrazorError

_QUIET_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync")


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    browser = find_chromium()
    if browser is None:
        raise ConfigError("headless Chromium is needed to render the report and none is installed; "
                          "install it (`apt-get install chromium`) or open report.html in any browser.")
    with tempfile.TemporaryDirectory(prefix="netrazor-chromium-") as profile:
        result = subprocess.run([browser, *_QUIET_FLAGS, f"--user-data-dir={profile}", *args],
                                capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise NetrazorError(f"Chromium failed to render the page (exit {result.returncode}): {result.stderr[-800:]}")
    return result


def render_dom(html_path: str | Path, timeout: float = 120) -> str:
    """The page's DOM after Chromium loaded it (scripts run, images decoded)."""
    return _run(["--dump-dom", Path(html_path).resolve().as_uri()], timeout).stdout


def screenshot(html_path: str | Path, png_path: str | Path, width: int = 1200, height: int = 2400,
               timeout: float = 120) -> Path:
    """Write a ``width`` x ``height`` PNG of the page to ``png_path`` and return it."""
    png_path = Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--screenshot={png_path}", f"--window-size={width},{height}", Path(html_path).resolve().as_uri()], timeout)
    if not png_path.exists():
        raise NetrazorError(f"Chromium exited cleanly but wrote no screenshot to {png_path}.")
    return png_path
