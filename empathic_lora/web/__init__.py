"""The web layer shared by the apps that serve a model over HTTP (`serve.py`'s chat API and page,
the human-evaluation app): app setup, static files, limits and JSON errors.

Nothing here knows about chat or evaluation. An app is built and run like this::

    from empathic_lora import web

    app = web.create_app("my app", static_dir=Path(__file__).parent / "my_page", max_body_bytes=1 << 20)

    @app.post("/api/answer")
    async def answer(body: MyPydanticModel) -> dict:  # a bad body is a 400 naming the field
        if ...:
            raise web.ApiError(409, "already answered", param="item_id", code="duplicate")
        return {...}

    sock = web.bind(args.host, args.port)  # a taken port is a UserError; do it before loading a model
    web.serve(app, sock)                    # prints `listening on http://HOST:PORT`, then runs uvicorn

- `create_app` (`web.app`): a FastAPI app whose every error, its own (`ApiError`), a request
  validation error (400, `param` names the field, e.g. `messages[0].role`), an unknown path, an
  oversized body (413) or a bug (500), is the JSON body
  `{"error": {"message", "type", "param", "code"}}`, the shape OpenAI's API and clients use; the
  app's OpenAPI schema (`/openapi.json`) declares it for every route's 4XX and 5XX responses
  (`ERROR_RESPONSES`), and a 405 carries `Allow`.
  `static_dir` is served at `/static/...` and its `index.html` at `/`. Every response carries a
  Content-Security-Policy that allows only same-origin scripts, styles and requests: a page can
  use no CDN and no inline script.
- `bind` and `serve` (`web.server`): the listening socket is opened first, so a port in use or a
  bad host is one `error:` line, and `--port 0` picks a free port (the line printed says which).
- Tests and benchmarks run an app with `tests/web_harness.py` (test scaffolding, so not shipped
  in the package; it needs Playwright only for `browser`)::

      import web_harness as harness

      with harness.server_process(["serve.py", "--checkpoint", ckpt], cwd=ROOT) as server:
          urllib.request.urlopen(server.url + "/health")  # an app started as a user would
      with harness.server_thread(app) as url:              # in-process: the test can monkeypatch
          ...
      with harness.browser() as browser:                   # headless Debian chromium via Playwright
          page = browser.new_page(); page.goto(url)

  `server_process` runs `python ARGV --host 127.0.0.1 --port 0`, reads the port from the
  `listening on` line and waits until `GET /health` answers 200, so an app must serve `/health`.
"""

from empathic_lora.web.app import ApiError, create_app, error_body
from empathic_lora.web.server import bind, serve

__all__ = ["ApiError", "bind", "create_app", "error_body", "serve"]
