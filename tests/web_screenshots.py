"""The README's screenshots of `fsm serve`, taken in Debian's Chromium from the scripted demo:

    python -m tests.web_screenshots docs/

(the browser tests keep their own under artifacts/screenshots/ on every run)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.test_web_browser import CHROMIUM
from tests.web_support import app_for, serving


def main(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/demo.db"
        fsm = Path(sys.executable).with_name("fsm")
        subprocess.run(
            [str(fsm), "demo", "--scripted", "--db", url], check=True, capture_output=True
        )
        with serving(app_for(url)) as base, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.goto(f"{base}/?window=all")
            page.locator('[data-lifecycle="service"]').screenshot(
                path=str(folder / "web-overview.png")
            )
            page.goto(f"{base}/entities/demo-svc-api")
            page.screenshot(path=str(folder / "web-entity.png"), full_page=True)
            browser.close()
    for name in ("web-overview.png", "web-entity.png"):
        print(folder / name)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs")))
