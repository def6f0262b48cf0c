"""Running an app for a test or a benchmark: as a subprocess, in a thread, and a headless browser.

See `empathic_lora.web` for how a test uses these. Servers listen on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI

from empathic_lora.web.server import LISTENING, bind, url_of

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--no-first-run", "--disable-gpu"]


@dataclass
class RunningServer:
    url: str  # http://127.0.0.1:PORT
    process: subprocess.Popen
    log_path: Path  # the server's stdout and stderr

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def _health(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def server_process(
    argv: Sequence[str], timeout: float = 300, cwd: str | Path | None = None, env: dict[str, str] | None = None
) -> Iterator[RunningServer]:
    """`python ARGV --host 127.0.0.1 --port 0`, once its `/health` answers 200; stopped (SIGTERM) on exit.

    The port is read from the `listening on URL` line that `web.serve` prints. Raises RuntimeError
    with the server's output when it exits or is not ready within `timeout` seconds.
    """
    with tempfile.TemporaryDirectory(prefix="server-") as tmp:
        log_path = Path(tmp) / "server.log"
        with open(log_path, "wb") as log_file:  # a file, not a pipe: a full pipe would stall the server
            process = subprocess.Popen(
                [sys.executable, *argv, "--host", "127.0.0.1", "--port", "0"], cwd=cwd, stdout=log_file,
                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )
        server = RunningServer("", process, log_path)
        try:
            deadline = time.monotonic() + timeout
            while not (server.url and _health(server.url)):
                if process.poll() is not None or time.monotonic() > deadline:
                    state = f"exited with {process.returncode}" if process.poll() is not None else f"not ready in {timeout} s"
                    raise RuntimeError(f"server {' '.join(argv)} {state}:\n{server.log()[-5000:]}")
                found = re.search(rf"{LISTENING} (http://\S+)", server.log())
                server.url = found.group(1) if found else ""
                time.sleep(0.1)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def server_thread(app: FastAPI, timeout: float = 30) -> Iterator[str]:
    """`app` served by uvicorn in a thread of this process on 127.0.0.1 (a free port); yields its URL."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the in-process server did not start")
            time.sleep(0.02)
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout + 10)
        sock.close()


def chromium_path() -> str | None:
    """Debian's chromium (Playwright cannot download its own browser offline); `$CHROMIUM` overrides."""
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def browser() -> Iterator[Browser]:
    """A headless chromium driven by Playwright for Python; RuntimeError when chromium is missing."""
    from playwright.sync_api import (
        sync_playwright,  # a test-only dependency (the `dev` extra)
    )

    executable = chromium_path()
    if executable is None:
        raise RuntimeError("chromium is not installed (apt-get install chromium, or set $CHROMIUM)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
