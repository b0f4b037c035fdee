"""`fsm serve` in a real browser: Debian's headless Chromium driven by Playwright (never a
browser Playwright downloads). In CI a missing browser fails the run; elsewhere it skips.

Screenshots of every page go to artifacts/screenshots/ (a stable path CI keeps).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from fsm import Engine
from fsm.cli import main
from tests.components import unavailable
from tests.web_support import SECRET, app_for, build, serving

CHROMIUM = os.environ.get("FSM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set FSM_CHROMIUM)"
        unavailable(message)
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    yield tab
    context.close()


def shot(tab: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_overview_shows_the_counts_of_the_database(sqlite_url: str, page: Page) -> None:
    built = build(sqlite_url)
    with serving(app_for(sqlite_url)) as base:
        page.goto(f"{base}/?window=all")
        for lifecycle in ("service", "host"):
            card = page.locator(f'[data-testid="lifecycle"][data-lifecycle="{lifecycle}"]')
            rows = card.locator('[data-testid="counts"] tbody tr')
            shown = {
                rows.nth(i).get_attribute("data-state"): int(
                    rows.nth(i).locator('[data-testid="count"]').inner_text()
                )
                for i in range(rows.count())
            }
            expected = {s: n for (lc, s), n in built.counts.items() if lc == lifecycle}
            assert {s: n for s, n in shown.items() if n} == expected
            assert card.locator("svg g[id^='state-']").count() == rows.count()  # one per state
        assert SECRET not in page.content()
        shot(page, "overview")


def test_entity_page_shows_the_history_of_fsm_history_json(sqlite_url: str, page: Page) -> None:
    build(sqlite_url)
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["history", "svc-003", "--db", sqlite_url, "--json"]) == 0
    expected = json.loads(out.getvalue())["transitions"]
    with serving(app_for(sqlite_url)) as base:
        page.goto(f"{base}/entities/svc-003")
        rows = page.locator('[data-testid="history"] tbody tr')
        shown = []
        for i in range(rows.count()):
            cells = rows.nth(i).locator("td").all_inner_texts()
            shown.append(
                {
                    "seq": int(cells[0]),
                    "move": cells[1],
                    "event": cells[2],
                    "source": cells[3],
                    "observed": cells[4],
                    "recorded": cells[5],
                }
            )
        assert shown == [
            {
                "seq": t["seq"],
                "move": f"{t['from_state']} → {t['to_state']}",
                "event": t["event"],
                "source": t["source"],
                "observed": t["observed_at"].replace("T", " ")[:23],
                "recorded": t["recorded_at"].replace("T", " ")[:23],
            }
            for t in expected
        ]
        assert page.locator('[data-testid="state"]').inner_text() == "HEALTHY"
        assert "no violations" in page.locator('[data-testid="verify"]').inner_text()
        assert page.locator('[data-testid="timeline"] .band').count() == 4
        assert SECRET not in page.content()
        shot(page, "entity")


def test_a_transition_recorded_while_the_page_is_open_appears(sqlite_url: str, page: Page) -> None:
    build(sqlite_url)
    with serving(app_for(sqlite_url)) as base:
        page.goto(f"{base}/entities/svc-000")
        page.wait_for_selector("body[data-live=ready]")
        assert page.locator('[data-testid="history"] tbody tr').count() == 0
        engine = Engine(sqlite_url)
        engine.fire("svc-000", "job_pending", {"password": SECRET})
        engine.close()
        page.wait_for_selector('[data-testid="history"] tr[data-seq="1"]', timeout=2000)
        assert page.locator('[data-testid="state"]').inner_text() == "PENDING"
        assert SECRET not in page.content()

        page.goto(f"{base}/entities?lifecycle=service")
        page.wait_for_selector("body[data-live=ready]")
        engine = Engine(sqlite_url)
        engine.create("host", {}, id="host-x")
        engine.fire("svc-001", "job_running", {})
        engine.close()
        live = page.locator('[data-testid="live"] tbody tr[data-entity="svc-001"]')
        live.wait_for(timeout=2000)
        assert page.locator('[data-testid="live"] tbody tr').count() == 1
        shot(page, "entities-live")


def test_filters_and_pagination_in_the_browser(sqlite_url: str, page: Page) -> None:
    build(sqlite_url, services=30, hosts=3)
    with serving(app_for(sqlite_url)) as base:
        page.goto(f"{base}/entities")
        page.select_option('select[name="lifecycle"]', "service")
        page.fill('input[name="state"]', "PENDING")
        page.click('button[type="submit"]')
        page.wait_for_url("**/entities?*state=PENDING*")
        pending = sum(1 for i in range(30) if i % 4 == 1)
        matching = page.locator('[data-testid="matching"]').inner_text()
        assert matching == f"{pending} matching"
        states = page.locator('[data-testid="entities"] .state').all_inner_texts()
        assert states == ["PENDING"] * pending
        shot(page, "entities")
        page.goto(f"{base}/entities?lifecycle=service&sort=created_at&desc=true&limit=4")
        seen: list[str] = []
        for _ in range(20):
            ids = page.locator('[data-testid="entities"] tbody tr').evaluate_all(
                "rows => rows.map(r => r.dataset.id)"
            )
            seen.extend(ids)
            following = page.locator('[data-testid="next"]')
            if following.count() == 0:
                break
            following.click()
            page.wait_for_load_state()
        assert sorted(seen) == sorted(f"svc-{i:03d}" for i in range(30))
        assert len(seen) == len(set(seen))
        page.goto(f"{base}/entities?q=svc+2")
        names = page.locator('[data-testid="entities"] tbody tr').count()
        assert names == 11  # "svc 2" and "svc 20" .. "svc 29"
