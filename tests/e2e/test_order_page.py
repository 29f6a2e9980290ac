"""The order viewer as a person uses it: an order published to Kafka reaches the page, driven in headless
Chromium (Debian's /usr/bin/chromium through Playwright; no browser download). Type the sample's UID and see
its items and totals; type an unknown one and see a friendly not-found; an invalid one is said so; a phone-
sized screen works too. Screenshots go to test-output/ for a person to look at.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from tests.e2e.http import call
from tests.fixtures.required import missing
from tests.polling import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.function("order_page")]

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output"
SAMPLE = ROOT / "functions" / "orders" / "data" / "wb-order-sample.json"
UID = "b563feb7b2b84b6test"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        import playwright.sync_api as playwright_api
    except ImportError as exc:  # a dev dependency of pyproject.toml: `make install` puts it there
        missing("playwright", f"{exc} (make install)")
    if not shutil.which(CHROMIUM):
        missing("chromium", f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def viewer(shop: dict[str, str], kafka_bootstrap: str) -> str:
    """The orders service's URL, once the sample order went through Kafka and is served."""
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        producer.send("orders", key=UID.encode(), value=SAMPLE.read_bytes()).get(timeout=30)
    finally:
        producer.close(5)
    base = shop["orders"]
    wait_for(lambda: call("GET", f"{base}/order/{UID}")[0] == 200, timeout=60)
    return base


def look_up(page: Any, uid: str) -> None:
    page.get_by_label("Order UID").fill(uid)
    page.get_by_role("button", name="Show order").click()


def test_the_sample_order_is_laid_out_with_its_items_and_totals(browser: Any, viewer: str) -> None:
    page = browser.new_page(viewport={"width": 1200, "height": 900}, locale="en-US")
    try:
        page.goto(viewer + "/")
        assert page.title() == "Order viewer"
        look_up(page, UID)
        order = page.locator("#order")
        order.wait_for(state="visible", timeout=60_000)  # a bound for a hang, not a speed requirement
        assert page.locator("#order-title").inner_text() == UID
        assert page.locator("#order-total").inner_text() == "$1,817"
        items = page.locator("#items tr")
        assert items.count() == 1
        row = items.first.inner_text()
        assert "Mascaras" in row and "Vivienne Sabo" in row and "$453" in row and "$317" in row
        assert page.locator("#goods-total").inner_text() == "$317"
        payment = page.locator("#payment").inner_text()
        assert "$1,500" in payment and "wbpay" in payment and "alpha" in payment
        delivery = page.locator("#delivery").inner_text()
        assert "Test Testov" in delivery and "Kiryat Mozkin" in delivery and "test@gmail.com" in delivery
        assert "November 26, 2021" in page.locator("#order-when").inner_text()  # the reader's locale
        assert page.url.endswith(f"?order={UID}")
        OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT / "order_page.png"), full_page=True)
    finally:
        page.close()


def test_an_unknown_uid_is_a_friendly_not_found_and_an_invalid_one_is_said_so(
    browser: Any, viewer: str
) -> None:
    page = browser.new_page(viewport={"width": 1200, "height": 700})
    try:
        page.goto(viewer + "/")
        look_up(page, "no-such-order-42")
        state = page.locator("#state")
        state.wait_for(state="visible")
        # locator waits, not wait_for_function: the page's Content-Security-Policy forbids eval
        page.locator("#state-title", has_text="No order found").wait_for()
        assert "no-such-order-42" in page.locator("#state-text").inner_text()
        assert page.locator("#order").is_hidden()
        OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT / "order_page_not_found.png"), full_page=True)
        look_up(page, "not a uid!")
        page.locator("#state-title", has_text="That does not look like an order UID").wait_for()
        assert page.get_by_label("Order UID").get_attribute("aria-invalid") == "true"
    finally:
        page.close()


def test_a_phone_sized_screen_opens_an_order_from_the_recent_list(browser: Any, viewer: str) -> None:
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    try:
        page.goto(viewer + "/")
        page.get_by_role("navigation", name="Recent orders").get_by_role("button", name=UID).click()
        page.locator("#order").wait_for(state="visible")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390  # nothing wider than the screen
        OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT / "order_page_phone.png"), full_page=True)
    finally:
        page.close()


def test_the_docs_are_served(viewer: str) -> None:
    status, body, _ = call("GET", f"{viewer}/openapi.json")
    assert status == 200 and "/order/{order_uid}" in body["paths"]
