"""serve.py's chat page in a real browser: headless Debian chromium through Playwright."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import web_harness as harness

from empathic_lora.safety.crisis_check import DEFAULT_MESSAGE, CrisisCheck
from empathic_lora.serve.api_server import ServeConfig, create_app
from empathic_lora.session import trained_model


@pytest.fixture(scope="module")
def page_url(tiny_ckpt: Path) -> Iterator[tuple[str, trained_model.TrainedModel]]:
    loaded = trained_model.load(tiny_ckpt, device="cpu")
    with harness.server_thread(create_app(loaded, ServeConfig("tiny", loaded.default_history_turns(), CrisisCheck()))) as url:
        yield url, loaded


@pytest.fixture
def page(browser, page_url):
    url, loaded = page_url
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(url + "/")
    yield page
    context.close()
    assert not errors  # a blocked resource or a script error shows here


def say(page, text: str) -> None:
    page.fill("#message", text)
    page.press("#message", "Enter")


def test_two_streamed_replies_then_reset(page, page_url) -> None:
    _, loaded = page_url
    slow = loaded.model.get_input_embeddings().register_forward_pre_hook(lambda *_: time.sleep(0.05))
    try:
        say(page, "I feel overwhelmed with work")
        # Part of the reply is on the page while it is still being generated: it streams.
        page.wait_for_selector(".assistant.streaming:not(:empty)", timeout=30_000)
        page.wait_for_selector(".assistant:not(.streaming)", timeout=60_000)
        say(page, "My boss keeps adding projects")
        page.locator(".assistant:not(.streaming)").nth(1).wait_for(timeout=60_000)  # no eval: the page's CSP forbids it
    finally:
        slow.remove()
    assert page.locator(".user").all_text_contents() == ["I feel overwhelmed with work", "My boss keeps adding projects"]
    replies = page.locator(".assistant").all_text_contents()
    assert len(replies) == 2 and all(replies)
    assert page.is_enabled("#send")
    page.click("#reset")
    assert page.locator(".turn").count() == 0
    say(page, "hello again")
    page.wait_for_selector(".assistant:not(.streaming)", timeout=60_000)
    assert page.locator(".user").all_text_contents() == ["hello again"]  # the conversation started over


def test_the_crisis_notice_is_distinct_and_text_stays_text(page) -> None:
    say(page, "<img src=x onerror=alert(1)> I want to die")
    notice = page.wait_for_selector(".crisis", timeout=60_000)
    assert DEFAULT_MESSAGE in notice.text_content()
    assert DEFAULT_MESSAGE not in page.locator(".assistant").text_content()
    assert page.locator(".user").text_content() == "<img src=x onerror=alert(1)> I want to die"
    assert page.locator("#log img").count() == 0
