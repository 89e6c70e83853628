"""The web board in a real browser: Playwright drives Debian's Chromium, headless, against a real
server on the test Valkey. Skipped, saying why, where Playwright or Chromium is missing or Chromium
cannot start (CI needs `apt-get install chromium` and the `dev` extra; SWARM_TEST_CHROMIUM names another
Chromium binary)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from redis.asyncio import Redis

from swarm.board import Board, TaskSpec
from swarm.settings import Settings
from tests.test_web_api import bearer, make_app, running

playwright: Any = pytest.importorskip(
    "playwright.async_api", reason="playwright is not installed: pip install -e '.[dev]' (the dev extra has it)")

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

CHROMIUM = Path(os.environ.get("SWARM_TEST_CHROMIUM", "/usr/bin/chromium"))
"""Debian's Chromium (`apt-get install chromium`); SWARM_TEST_CHROMIUM names another build."""
HAVE_CHROMIUM = CHROMIUM.exists()
WAIT_MS = 10_000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install chromium` to run the browser tests")
    async with playwright.async_playwright() as pw:
        try:
            launched: Browser = await pw.chromium.launch(executable_path=str(CHROMIUM))
        except playwright.Error as exc:
            pytest.skip(f"Chromium at {CHROMIUM} cannot be launched here: {str(exc).strip().splitlines()[0]}")
        try:
            yield launched
        finally:
            await launched.close()


async def open_board(browser: Browser, url: str, token: str) -> Page:
    """A fresh browser profile signed in with `token` (the `#token=` link `swarm web token` prints)."""
    context = await browser.new_context(viewport={"width": 1280, "height": 720})
    page = await context.new_page()
    await page.goto(f"{url}/#token={token}")
    await page.wait_for_selector("#live.on", timeout=WAIT_MS)
    return page


def token_of(settings: Settings, role: str) -> str:
    return bearer(settings, role)["Authorization"].removeprefix("Bearer ")


async def test_the_board_renders_and_follows_board_events(browser: Browser, redis: Redis, settings: Settings,
                                                          tmp_path: Path) -> None:
    board = Board(redis, settings)
    for title in ("Audit the auth module", "Document swarm.bus", "Consolidate the retry helpers"):
        await board.create(TaskSpec(kind="audit", title=title))
    claimed = await board.claim_next("agent-1", ["audit"])
    assert claimed is not None
    async with running(make_app(settings, redis)) as url:
        page = await open_board(browser, url, token_of(settings, "viewer"))
        await page.wait_for_selector('#tasks tr[data-id="t-1"]', timeout=WAIT_MS)
        assert await page.locator("#tasks tbody tr").count() == 3
        assert await page.inner_text("#counts .count.open b") == "2"
        assert await page.inner_text("#counts .count.running b") == "1"
        assert await page.inner_text("#who") == "viewer"
        lease = await page.inner_text('#tasks tr[data-id="t-1"] td.lease')
        assert lease.endswith("s"), lease  # counting down

        await page.evaluate("window.loadedOnce = true")  # gone if the page reloads
        await board.create(TaskSpec(kind="docs", title="Created while the page was open", priority=8))
        row = await page.wait_for_selector('#tasks tr[data-id="t-4"]', timeout=WAIT_MS)
        assert row is not None
        assert "Created while the page was open" in await row.inner_text()
        assert await page.evaluate("window.loadedOnce") is True
        assert await page.locator("#tasks tbody tr").first.get_attribute("data-id") == "t-4"  # newest first
        assert await page.inner_text("#counts .count.open b") == "3"
        assert await page.inner_text("#range") == "1–4 of 4"
        await page.screenshot(path=str(tmp_path / "board.png"), full_page=True)

        await page.click('#tasks a[href="/tasks/t-1"]')
        await page.wait_for_selector("#history tbody tr", timeout=WAIT_MS)
        assert [r.split("\t")[1] for r in await page.locator("#history tbody tr").all_inner_texts()] == [
            "created", "claimed"]
        assert claimed.token == 1
        await board.complete("t-1", 1, "no secrets found", agent="agent-1")
        await page.locator("#history tbody tr").nth(2).wait_for(timeout=WAIT_MS)  # the page's CSP allows no eval
        await page.screenshot(path=str(tmp_path / "task.png"), full_page=True)


async def test_retry_works_for_a_captain_and_is_refused_to_a_viewer(browser: Browser, redis: Redis,
                                                                    settings: Settings, tmp_path: Path) -> None:
    board = Board(redis, settings)
    await board.create(TaskSpec(kind="audit", title="Scan for secrets"))
    task = await board.claim_next("agent-1", ["audit"])
    assert task is not None
    await board.fail(task.id, task.token, "scanner crashed", agent="agent-1", retry=False)
    async with running(make_app(settings, redis)) as url:
        viewer = await open_board(browser, url, token_of(settings, "viewer"))
        await viewer.click('#tasks tr[data-id="t-1"] button.retry', timeout=WAIT_MS)
        await viewer.wait_for_selector("#flash.error", timeout=WAIT_MS)
        assert await viewer.inner_text("#flash") == (
            "retry t-1 refused (403): a viewer token cannot retry tasks: that needs a captain token "
            "(`swarm web token --role captain`)")
        assert (await board.counts())["open"] == 0

        captain = await open_board(browser, url, token_of(settings, "captain"))
        await captain.click('#tasks tr[data-id="t-1"] button.retry', timeout=WAIT_MS)
        await captain.wait_for_selector('#tasks tr[data-id="t-1"] .state.open', timeout=WAIT_MS)  # live
        await captain.wait_for_selector("#flash.ok", timeout=WAIT_MS)  # the reply may come after the event
        assert await captain.inner_text("#flash") == "retry t-1: t-1 is open"
        await viewer.wait_for_selector('#tasks tr[data-id="t-1"] .state.open', timeout=WAIT_MS)  # every page follows
        assert await captain.inner_text("#counts .count.failed b") == "0"
        await captain.screenshot(path=str(tmp_path / "retried.png"), full_page=True)
    retried = await board.get("t-1")
    assert (retried.state, retried.attempts, retried.title) == ("open", 0, "Scan for secrets")
