"""The annotation page in a real browser (headless Debian chromium via Playwright): an annotator
judges a few items with the keyboard, leaves, comes back by name, finishes with the mouse; the
report then counts every judgment. Also: text from the samples is shown as text, never run as
markup, and the page loads nothing from outside the app."""

from __future__ import annotations

from pathlib import Path

import web_harness as harness
from humaneval_samples import rows, two_runs, write_samples

from empathic_lora.humaneval.app import create_app
from empathic_lora.humaneval.report import analyse
from empathic_lora.humaneval.storage import Store
from empathic_lora.humaneval.study import build_study

HOSTILE = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"> <b>bold</b>'


def test_annotate_leave_come_back_finish_and_report(tmp_path: Path, browser) -> None:
    a, b = two_runs(tmp_path, n=5)
    write_samples(a, rows(1, HOSTILE, start=9))  # a context both runs share, with a hostile reply in A
    write_samples(b, rows(1, "B says sorry {i}", start=9))
    store = Store.create_or_open(tmp_path / "study.sqlite", build_study(a, b, attention_rate=0.2))
    total = len(store.study.items)
    with harness.server_thread(create_app(store)) as url:
        requested: list[str] = []
        page = browser.new_page()
        page.on("request", lambda request: requested.append(request.url))
        page.goto(url)
        page.fill("#name", "alice")
        page.press("#name", "Enter")
        for k in range(3):  # keyboard only: one key per question, Enter saves
            page.wait_for_selector(f"#position:text('Item {k + 1} of {total}')")
            page.keyboard.press("1")
            page.keyboard.press("2")
            page.keyboard.press("t")
            page.keyboard.press("Enter")
        page.wait_for_selector(f"#position:text('Item 4 of {total}')")
        assert page.text_content("#status") == "Saved item 3."
        page.keyboard.press("ArrowLeft")  # back to item 3: its answers are shown, and saving again replaces them
        page.wait_for_selector(f"#position:text('Item 3 of {total}')")
        assert page.locator("#questions button[aria-pressed=true]").all_text_contents() == ["Reply 1", "Reply 2", "Tie"]
        page.keyboard.press("2")
        page.keyboard.press("Enter")
        page.wait_for_selector("#status:text('replaces your earlier answer')")
        page.close()  # leave

        page = browser.new_page()  # come back later, by name
        page.on("request", lambda request: requested.append(request.url))
        page.goto(url)
        page.fill("#name", "alice")
        page.click("#login-form button")
        page.wait_for_selector(f"#position:text('Item 4 of {total}')")
        assert page.url.endswith("?annotator=alice")
        hostile_seen = False
        for k in range(3, total):  # the mouse this time, with a rating
            page.wait_for_selector(f"#position:text('Item {k + 1} of {total}')")
            replies = [page.text_content("#reply-1"), page.text_content("#reply-2")]
            if HOSTILE in replies:
                hostile_seen = True
                assert page.locator("#replies script, #replies img, #replies b").count() == 0
            for question in page.locator("#questions li").all():
                question.get_by_role("button", name="Reply 2").click()
            page.locator(".rating[data-reply='0'] button", has_text="4").click()
            page.click("#save")
        page.wait_for_selector("#done:visible")
        assert hostile_seen and page.evaluate("window.pwned") is None
    assert requested and all(request.startswith(url) or request.startswith("data:") for request in requested)
    report = analyse(store, min_pass_rate=None)  # she clicked without reading, checks included
    (alice,) = report.annotators
    assert alice.judged == total and alice.checks == total - 6
    assert {j.revisions for j in store.judgments()} == {0, 1}
    assert [p.wins + p.ties + p.losses for p in report.by_judgment] == [6, 6, 6]
    rated = [item for item in store.study.order("alice")[3:] if item.kind == "pair"]  # reply 1 of each, by mouse
    assert report.ratings["a"].n + report.ratings["b"].n == len(rated)
