"""Running an app: the listening socket first (a taken port is a user's mistake), then uvicorn."""

from __future__ import annotations

import errno
import socket
import sys

import uvicorn
from fastapi import FastAPI

from empathic_lora.errors import UserError

LISTENING = "listening on"  # the line `harness.server_process` reads the port from


def bind(host: str, port: int) -> socket.socket:
    """A socket listening on `host`:`port` (`port` 0: a free one), or a UserError naming the flag.

    Opened before the app loads anything, so that `--port` in use fails in a second, not after
    loading a model; uvicorn then serves on this very socket, leaving no window for another process.
    """
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port}: must be in 0..65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as error:
        raise UserError(f"--host {host}: not an address of this machine ({error.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait out TIME_WAIT
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise UserError(f"--port {port}: {host}:{port} is already in use; pick another --port") from None
        raise UserError(f"--host {host} --port {port}: cannot listen there ({error.strerror})") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(app: FastAPI, sock: socket.socket, log_level: str = "info") -> None:
    """Serve `app` on `sock` until Ctrl-C or SIGTERM; prints `listening on URL` to stderr first."""
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5)
    print(f"{LISTENING} {url_of(sock)}", file=sys.stderr, flush=True)
    uvicorn.Server(config).run(sockets=[sock])
