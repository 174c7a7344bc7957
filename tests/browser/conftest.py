"""The portal in a real browser: Debian's chromium driven by Playwright, over the three
services and the portal as OS processes, a real Kafka broker and a real SMTP server.

Playwright's own browser download is never used (`playwright install` is not run): the
browser is /usr/bin/chromium (deploy/test installs it). One system for the package: starting the
services is what costs; each test uses a fresh browser context (no cookies) and its own
tenant or addresses.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.local.mailcatcher import MailCatcher
from tests.support.system import System

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture(scope="package")
def mail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailCatcher]:
    catcher = MailCatcher(port=0, directory=tmp_path_factory.mktemp("mail"))
    catcher.start()
    yield catcher
    catcher.stop()


@pytest.fixture(scope="package")
def system(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap_servers: str, mail: MailCatcher
) -> Iterator[System]:
    root = tmp_path_factory.mktemp("system")
    system = System(root, kafka_bootstrap_servers, mail.port, with_portal=True)
    system.start()
    yield system
    system.stop()
    for service in system.services.values():
        assert service.errors() == [], f"{service.name} logged errors"


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.fail("chromium is missing: deploy/test installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    context = browser.new_context(locale="en-GB", viewport={"width": 1000, "height": 800})
    context.set_default_timeout(60_000)  # a loaded CI machine: waits, not limits
    yield context
    context.close()


@pytest.fixture
def page(context: Any) -> Any:
    return context.new_page()


def screenshot(page: Any, name: str) -> None:
    """docs/screenshots/<name>.png, which the README shows."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def accessible(page: Any) -> None:
    """axe-core's checks (WCAG 2 A/AA rules) find nothing on the page."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page, options={"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa"]}})
    assert results.violations_count == 0, results.generate_report()


def in_thread(func: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a helper that uses asyncio.run (publishing, reading topics) outside Playwright's
    event loop, which the sync API keeps running in this thread."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(func, *args, **kwargs).result()
