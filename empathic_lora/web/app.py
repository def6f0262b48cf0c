"""A FastAPI app with the shared limits and one JSON shape for every error (see `empathic_lora.web`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Same-origin only: a page cannot pull a CDN script, run inline script or send the conversation elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
_TYPES = {400: "invalid_request_error", 404: "not_found_error", 413: "invalid_request_error", 503: "server_overloaded"}


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The error JSON of OpenAI's API, which its clients turn into exceptions carrying `message`."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """`error_body` as the OpenAPI schema declares it."""

    error: ErrorDetail


# Every route's error responses, as they are sent: FastAPI would otherwise declare only a 422 that the
# handlers below turn into 400, and no other error; schema-driven clients and fuzzers check against this.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorBody, "description": "A bad request (400; `param` names the field), an unknown path "
            "or resource (404), a method the path does not allow (405, with `Allow`), a body too large (413)"},
    "5XX": {"model": ErrorBody, "description": "The server is busy (503, retry later) or failed (500)"},
}


class ApiError(Exception):
    """An error an endpoint answers with: `status`, and the fields of `error_body`.

    `type` defaults from the status (400 and 413 `invalid_request_error`, 404 `not_found_error`,
    503 `server_overloaded`, other 4xx `invalid_request_error`, 5xx `server_error`).
    """

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None, type: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def field_path(location: Sequence[str | int]) -> str:
    """`("body", "messages", 0, "role")` as `messages[0].role`, the way OpenAI names a field."""
    path = ""
    for part in location[1:] if location and location[0] in ("body", "query", "path") else location:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0]
    if first.get("type") == "json_invalid":
        return ApiError(400, f"the request body is not valid JSON ({first.get('ctx', {}).get('error', 'unreadable')})",
                        code="invalid_json").response()
    param = field_path(first.get("loc", ())) or None
    message = first.get("msg", "invalid value")
    return ApiError(400, f"{param}: {message}" if param else message, param=param, code="invalid_value").response()


def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    response = ApiError(error.status_code, str(error.detail)).response()
    response.headers.update(error.headers or {})  # e.g. a 405's `Allow`, which HTTP requires
    return response


def _api_error(request: Request, error: ApiError) -> JSONResponse:
    return error.response()


def _server_error(request: Request, error: Exception) -> JSONResponse:
    # Starlette re-raises the error after this response is sent, so uvicorn logs its traceback.
    return ApiError(500, f"internal server error ({type(error).__name__}); the server log has the details").response()


class BodyLimit:
    """Refuses a request body over `max_bytes` with 413, by its Content-Length header or, for a
    chunked body, as soon as the bytes read pass the limit. Hand-written: Starlette and FastAPI
    have no request-size limit, and uvicorn's only bounds single HTTP messages."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self) -> HTTPException:
        return HTTPException(413, f"the request body is larger than this server's limit of {self.max_bytes} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.max_bytes:
            error = self._too_large()
            return await ApiError(413, str(error.detail), code="body_too_large").response()(scope, receive, send)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise self._too_large()  # FastAPI passes an HTTPException from body reading on to its handler
            return message

        await self.app(scope, counted, send)


class SecurityHeaders:
    """Adds `CONTENT_SECURITY_POLICY` and no-sniffing to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                ]
            await send(message)

        await self.app(scope, receive, with_headers if scope["type"] == "http" else send)


def create_app(title: str, static_dir: str | Path | None = None, max_body_bytes: int = 1 << 20) -> FastAPI:
    """A FastAPI app with the shared error shape and limits (see `empathic_lora.web`).

    Args:
        title: The app's name in its OpenAPI schema (`/openapi.json`).
        static_dir: Served at `/static/...`; its `index.html` is the page at `/`.
        max_body_bytes: Larger request bodies are refused with 413.
    """
    # No /docs or /redoc: FastAPI's pages load their scripts from a CDN, which the policy above forbids.
    app = FastAPI(title=title, docs_url=None, redoc_url=None, responses=ERROR_RESPONSES)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(Exception, _server_error)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(SecurityHeaders)
    if static_dir is not None:
        static = Path(static_dir)
        app.mount("/static", StaticFiles(directory=static), name="static")

        @app.get("/", include_in_schema=False)
        async def index() -> FileResponse:
            return FileResponse(static / "index.html")

    return app
