"""The shared web layer (`empathic_lora.web`): error shape, limits, static files, socket errors."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request

import pytest
import web_harness as harness
from pydantic import BaseModel, Field

from empathic_lora import web
from empathic_lora.errors import UserError


class Answer(BaseModel):
    item: int = Field(ge=0)
    scores: list[int]


def request(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
    """Status, headers and JSON body of one request, error statuses included."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory):
    static = tmp_path_factory.mktemp("static")
    (static / "index.html").write_text("<p>page</p>", encoding="utf-8")
    (static / "page.js").write_text("1;", encoding="utf-8")
    app = web.create_app("test app", static_dir=static, max_body_bytes=200)

    @app.post("/answer")
    async def answer(body: Answer) -> dict:
        if body.item == 7:
            raise web.ApiError(409, "item 7 is answered", param="item", code="duplicate")
        return {"ok": sum(body.scores)}

    @app.get("/boom")
    async def boom() -> None:
        raise ZeroDivisionError

    with harness.server_thread(app) as url:
        yield url


def test_a_valid_request_and_the_page_are_served(app_url: str) -> None:
    assert request(f"{app_url}/answer", b'{"item": 1, "scores": [2, 3]}')[2] == {"ok": 5}
    with urllib.request.urlopen(app_url + "/", timeout=30) as page:
        assert page.read() == b"<p>page</p>"
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    with urllib.request.urlopen(app_url + "/static/page.js", timeout=30) as script:
        assert script.read() == b"1;"


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        (b'{"item": -1, "scores": []}', 400, "item", "invalid_value"),
        (b'{"item": 1, "scores": [1, "x"]}', 400, "scores[1]", "invalid_value"),
        (b'{"item": 1', 400, None, "invalid_json"),
        (b'{"item": 7, "scores": []}', 409, "item", "duplicate"),
        (b'{"item": 1, "scores": [' + b"1, " * 100 + b"1]}", 413, None, "body_too_large"),
    ],
)
def test_every_error_has_openais_shape(app_url: str, body: bytes, status: int, param: str | None, code: str) -> None:
    got, _, payload = request(f"{app_url}/answer", body)
    assert got == status
    assert set(payload["error"]) == {"message", "type", "param", "code"}
    assert (payload["error"]["param"], payload["error"]["code"]) == (param, code)
    if param:
        assert payload["error"]["message"].startswith(param)


def test_a_chunked_body_over_the_limit_is_refused_while_read(app_url: str) -> None:
    chunks = [b'{"item": 1, "scores": [', b"1, " * 100, b"1]}"]  # no Content-Length: sent chunked
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"
    head = b"POST /answer HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    url = urllib.parse.urlsplit(app_url)
    # The whole request in one write: urllib sent chunk by chunk, and a chunk written after the
    # server's 413 broke the pipe before the response could be read (a flake of the client's).
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(head + body)
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 413
        assert json.loads(response.read())["error"]["type"] == "invalid_request_error"


def test_unknown_paths_and_bugs_are_json_errors(app_url: str) -> None:
    status, _, payload = request(f"{app_url}/nowhere")
    assert (status, payload["error"]["type"]) == (404, "not_found_error")
    status, _, payload = request(f"{app_url}/boom")
    assert (status, payload["error"]["type"]) == (500, "server_error")
    assert "ZeroDivisionError" in payload["error"]["message"]


def test_a_taken_port_and_a_bad_host_are_user_errors() -> None:
    taken = web.bind("127.0.0.1", 0)
    port = taken.getsockname()[1]
    try:
        with pytest.raises(UserError, match=f"--port {port}: .* already in use"):
            web.bind("127.0.0.1", port)
    finally:
        taken.close()
    with pytest.raises(UserError, match="--host no.such.host.invalid"):
        web.bind("no.such.host.invalid", 0)
    with pytest.raises(UserError, match="--port 70000"):
        web.bind("127.0.0.1", 70000)


def test_the_browser_harness_renders_a_page(app_url: str, browser) -> None:
    page = browser.new_page()
    page.goto(app_url + "/")
    assert page.text_content("p") == "page"
