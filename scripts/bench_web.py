"""Web board benchmark (not a test): the board page with 10,000 tasks in a real browser.

Run: `.venv/bin/python scripts/bench_web.py` (about a minute; `--help` lists the options). It starts a
throwaway embedded Valkey in a temporary directory (unless SWARM_REDIS_URL points at a server to use:
only keys of the swarm `benchweb` are touched, and deleted), `python -m swarm web` as a real process,
and Debian's Chromium headless through Playwright (`apt-get install chromium`; the `dev` extra).

1. Seeding: N tasks created with `Board.create_many` (the time is printed, not a figure of the web).
2. Time to first paint, over R fresh page loads (a new browser context each, so nothing is cached):
   "shell" is the browser's first-contentful-paint of the page; "board" is navigation start to the
   first animation frame after the first page of the tasks table (50 rows of N) is in the document
   (a MutationObserver installed before the page's own script records it), so it includes the
   server-sent-events subscription, the `/api/board` read and the rendering. Median and max.
3. Board event -> visible: with the board open (no filter, newest first), E tasks are created one
   at a time with `Board.create`; the latency is from just before the call (`time.time()`, ms) to the
   moment the new row is inserted into the table (`Date.now()` in the page: same host, same clock).
   p50, p95 and max.
4. For scale: `GET /api/board` with a text filter, which reads three fields of every one of the N
   tasks (the unfiltered page reads only the 50 it shows). Median of 5.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx
from playwright.async_api import Page, async_playwright
from redis.asyncio import Redis

from swarm.board import Board, TaskSpec
from swarm.connection import open_redis
from swarm.keys import Keys
from swarm.server import EmbeddedServer
from swarm.settings import Settings
from swarm.web.auth import Tokens

SWARM_NAME = "benchweb"
SECRET = "bench-web-secret-" + "b" * 40
ROOT = Path(__file__).resolve().parent.parent
WATCH = """
window.__seen = {};
new MutationObserver((changes) => {
  for (const change of changes) for (const node of change.addedNodes) {
    if (node.nodeType !== 1) continue;
    if (node.matches("tr[data-id]")) window.__seen[node.dataset.id] = Date.now();
    if (!window.__boardAt && document.querySelector("#tasks tbody tr")) {
      requestAnimationFrame(() => { window.__boardAt = performance.now(); });
    }
  }
}).observe(document, {childList: true, subtree: true});
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def first_paint(page: Page, url: str, token: str) -> tuple[float, float]:
    await page.goto(f"{url}/#token={token}")
    await page.wait_for_selector("#tasks tbody tr:nth-child(50)", timeout=30_000)
    board_at = None
    while board_at is None:
        board_at = await page.evaluate("window.__boardAt")
        await anyio.sleep(0.01)
    fcp = await page.evaluate(
        "performance.getEntriesByName('first-contentful-paint').map((e) => e.startTime)[0] ?? null")
    return float(fcp or 0), float(board_at)


async def bench(args: argparse.Namespace, settings: Settings, url: str) -> None:
    token = Tokens(SECRET.encode(), SWARM_NAME).issue("viewer")
    async with open_redis(settings) as redis:
        board = Board(redis, settings, speak=False)
        started = time.perf_counter()
        specs = [TaskSpec(kind=("audit", "docs", "todo")[n % 3], title=f"Benchmark task {n} in module_{n % 97}.py",
                          priority=n % 10) for n in range(args.tasks)]
        await board.create_many(specs)
        print(f"seeded {args.tasks:,} tasks in {time.perf_counter() - started:.1f} s")

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=args.chromium)
            shells: list[float] = []
            boards: list[float] = []
            for _ in range(args.loads):
                context = await browser.new_context(viewport={"width": 1280, "height": 800})
                page = await context.new_page()
                await page.add_init_script(WATCH)
                fcp, at = await first_paint(page, url, token)
                shells.append(fcp)
                boards.append(at)
                await context.close()
            print(f"time to first paint over {args.loads} loads, board of {args.tasks:,} tasks: "
                  f"shell (first-contentful-paint) median {statistics.median(shells):.0f} ms, max {max(shells):.0f} ms;"
                  f" board table painted median {statistics.median(boards):.0f} ms, max {max(boards):.0f} ms")

            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            page = await context.new_page()
            await page.add_init_script(WATCH)
            await first_paint(page, url, token)
            latencies: list[float] = []
            for _ in range(args.events):
                before = time.time() * 1000
                task, _created = await board.create(TaskSpec(kind="docs", title="Created during the benchmark"))
                with anyio.fail_after(10):
                    # Polled from here: the row appears in the browser, where no Python event can wait on it.
                    while (seen := await page.evaluate(f"window.__seen[{task.id!r}] ?? null")) is None:  # noqa: ASYNC110
                        await anyio.sleep(0.005)
                latencies.append(float(seen) - before)
                await anyio.sleep(0.05)
            print(f"board event -> visible on the page, {args.events} tasks created one at a time: "
                  f"p50 {statistics.median(latencies):.1f} ms, p95 {percentile(latencies, 0.95):.1f} ms, "
                  f"max {max(latencies):.1f} ms")
            await browser.close()

        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
            spans = []
            for _ in range(5):
                started = time.perf_counter()
                reply = await client.get("/api/board", params={"q": "module_42.py"})
                spans.append((time.perf_counter() - started) * 1000)
                reply.raise_for_status()
            print(f"GET /api/board?q=... over {args.tasks:,} tasks ({reply.json()['total']} match): "
                  f"median {statistics.median(spans):.0f} ms")
        await clean(redis, settings)


async def clean(redis: Redis, settings: Settings) -> None:
    """Delete every key of the benchmark's swarm."""
    async for key in redis.scan_iter(match=Keys(settings.name).prefix + "*", count=1000):
        await redis.delete(key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000, help="Tasks on the board (default 10,000).")
    parser.add_argument("--loads", type=int, default=5, help="Fresh page loads timed for first paint.")
    parser.add_argument("--events", type=int, default=50, help="Tasks created while the page is open.")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="The Chromium binary Playwright drives.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="swarm-bench-web-") as tmp:
        home = Path(tmp) / ".swarm"
        url = os.environ.get("SWARM_REDIS_URL")
        server = None if url else EmbeddedServer(home)
        if server is not None:
            url = server.ensure().url
        assert url is not None
        settings = Settings(redis_url=url, name=SWARM_NAME, home=home)
        env = {**os.environ, "SWARM_REDIS_URL": url, "SWARM_NAME": SWARM_NAME, "SWARM_HOME": str(home),
               "SWARM_WEB_SECRET": SECRET}
        web = subprocess.Popen([sys.executable, "-m", "swarm", "web", "--port", "0"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            assert web.stderr is not None
            line = web.stderr.readline()
            found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            if not found:
                raise SystemExit(f"swarm web did not start: {line}{web.stderr.read()}")
            base = f"http://127.0.0.1:{found[1]}"
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                        break
                time.sleep(0.1)
            anyio.run(bench, args, settings, base)
        finally:
            web.terminate()
            web.wait(timeout=10)
            if web.stderr is not None:
                web.stderr.close()
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
