"""Render every page from a synthetic practice into HTML files and screenshot each one.

    .venv/bin/python -m tests.web.review --out build/web-review [--no-screenshots]

The pages are built exactly as a route will build them (``caretally.web.pages`` over real
engine output, see ``tests/web/practice.py``), written with the static files beside them,
and photographed by headless Chromium at 1280×900 (full page height). Open the PNGs to
review the design; the HTML files open in any browser.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from caretally.web.templating import STATIC_DIR, environment
from tests.web.practice import Practice, Rendered, all_pages, build_practice

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)


def write_site(out: Path, practice: Practice) -> list[tuple[Rendered, Path]]:
    """Every page as ``out/<name>.html``, with the static files in ``out/static/``."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(STATIC_DIR, out / "static", dirs_exist_ok=True)
    env = environment(static_prefix="static/")
    written = []
    for item in all_pages(practice):
        path = out / f"{item.name}.html"
        path.write_text(item.html(env), encoding="utf-8")
        written.append((item, path))
    return written


def page_height(html: Path) -> int:
    """Full-page height for the screenshot, measured by the browser's own layout."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return 2400
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS[1:]))
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(html.resolve().as_uri())
        height = int(page.evaluate("document.documentElement.scrollHeight"))
        browser.close()
    return max(900, min(height, 8000))


def screenshot(html: Path, png: Path) -> None:
    height = page_height(html)
    subprocess.run(
        [
            CHROMIUM,
            *CHROMIUM_FLAGS,
            f"--screenshot={png}",
            f"--window-size=1280,{height}",
            html.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/web-review"))
    parser.add_argument("--no-screenshots", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="caretally-review-") as tmp:
        practice = build_practice(Path(tmp))
        written = write_site(args.out, practice)
        practice.engine.dispose()
    for item, path in written:
        line = f"{item.name:22} {path}"
        if not args.no_screenshots:
            png = path.with_suffix(".png")
            screenshot(path, png)
            line += f"  {png}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
