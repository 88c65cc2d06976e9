"""Open an omnifer report in headless Chromium, fail on a console error, save a screenshot.

    python bench/report_screenshot.py WORKSPACE_OR_REPORT.html --out shot.png [--width 1280]

A workspace stands for its ``report.html``. With Playwright's Python package installed (no
browser download needed) the system Chromium is driven through it, which also checks that
every ``<img>`` loaded (``naturalWidth > 0``) and that the page requested nothing from the
network; without it, Chromium's own ``--screenshot`` is used and any console line in its log
counts as an error (the log does not give the level; a report has no script). Exit status 1
when the page logged an error, requested the network or an image did not load.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def with_playwright(page_url: str, out: Path, width: int) -> dict:
    from playwright.sync_api import sync_playwright

    errors, requests = [], []
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True,
            args=[f for f in FLAGS if f != "--headless"],
            viewport={"width": width, "height": 900})
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url)
                if not r.url.startswith(("file:", "data:")) else None)
        page.goto(page_url, wait_until="load")
        images = page.evaluate(
            "Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])")
        height = page.evaluate("document.documentElement.scrollHeight")
        page.screenshot(path=str(out), full_page=True)
        browser.close()
    broken = [alt for alt, ok in images if not ok]
    return {"engine": "playwright", "console_errors": errors, "network_requests": requests,
            "images": len(images), "images_not_loaded": broken, "page_height": height}


def with_cli(page_url: str, out: Path, width: int, height: int) -> dict:
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
             "--hide-scrollbars", f"--window-size={width},{height}", f"--screenshot={out}",
             page_url], capture_output=True, text=True, timeout=120)
    # Chromium's log does not say a console message's level: a report has no script, so
    # every console line (a blocked resource, a parse error) counts as an error
    errors = [line for line in proc.stderr.splitlines() if re.search(r":CONSOLE[:(]", line)]
    if proc.returncode != 0 or not out.is_file():
        errors.append(f"chromium exited with {proc.returncode}: {proc.stderr[-500:]}")
    return {"engine": "chromium --screenshot", "console_errors": errors}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a report.html or a workspace folder")
    parser.add_argument("--out", type=Path, default=Path("report.png"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=6000,
                        help="window height without Playwright (no full-page capture there)")
    args = parser.parse_args()
    page = args.report / "report.html" if args.report.is_dir() else args.report
    if not page.is_file():
        parser.error(f"no report at {page}; run `omnifer report` first")
    url = page.resolve().as_uri()
    try:
        import playwright  # noqa: F401
    except ImportError:
        result = with_cli(url, args.out, args.width, args.height)
    else:
        result = with_playwright(url, args.out, args.width)
    result.update({"report": str(page), "html_bytes": page.stat().st_size,
                   "screenshot": str(args.out)})
    print(json.dumps(result, indent=2))
    failed = result["console_errors"] or result.get("images_not_loaded") \
        or result.get("network_requests")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
