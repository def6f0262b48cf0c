"""Load and soak of `serve.py`: concurrent clients for a bounded time, every request answered or
refused with 503, latency, throughput and the server's memory.

    python bench/serve_load.py --checkpoint CKPT [--clients 12] [--seconds 90] [--max-requests 1100]

`serve.py` runs in its own process, started as a user starts it (`tests/web_harness.py`'s
`server_process`, on 127.0.0.1). `--clients` threads each send one request after another until
`--seconds` have passed or `--max-requests` requests have ended, whichever comes first, in turn:
a plain request, a streamed one read to `[DONE]`, and a streamed one whose client hangs up after
the first piece of the reply (the server must stop that generation and go on). More clients than
`--queue_size` + 1 keep the queue full, so some requests are refused with 503: that is an answer,
and that client waits `--backoff` seconds before its next request, as a polite client does (without
it the refusals, answered at once, would make up nearly all of the requests).

Output, one JSON line each:
- `requests`: how each request ended: `plain`, `streamed` (200, read to the end), `left` (hung up
  mid-stream), `refused` (503 queue_full), `failed` (anything else: a status, an error event, a
  stream without `[DONE]`, a connection error; the first few are printed on stderr).
- `latency`: p50/p95 milliseconds of the answered requests (plain and streamed, to the last byte),
  and throughput: answered requests and completion tokens per second over the whole run.
- `memory`: the server's resident memory (VmRSS of its process) after the first 100 and after
  1,000 requests had ended, and the growth between them; `leak` is true when it passes 50 MB
  (null when fewer than 1,000 requests ran); the 1-minute load average at the start and the end.

The exit status is 1 when a request failed, when the server does not come back to no pending
requests, or when a leak was seen.
"""

from __future__ import annotations

import collections
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

# Runnable from a checkout as `python bench/...`; the server harness is the tests' (tests/web_harness.py).
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
sys.path.insert(2, str(Path(__file__).resolve().parents[1] / "tests"))
import web_harness as harness  # noqa: E402

from empathic_lora.errors import ArgumentParser, UserError, run_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = ["I feel overwhelmed with work", "My dog finally came home after two days",
            "I am nervous about my exam tomorrow", "My sister forgot my birthday again"]
RSS_AT = (100, 1000)  # requests ended when the server's memory is read
LEAK_MB = 50


def rss_mb(pid: int) -> float:
    """The resident memory of process `pid` in MB (Linux: VmRSS in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class Load:
    """The clients' shared tally; `end` records one request and reads the memory at RSS_AT."""

    def __init__(self, pid: int, max_requests: int, deadline: float) -> None:
        self.pid, self.max_requests, self.deadline = pid, max_requests, deadline
        self.lock = threading.Lock()
        self.ended: collections.Counter[str] = collections.Counter()
        self.latencies: list[float] = []
        self.tokens = 0
        self.failures: list[str] = []
        self.rss: dict[int, float] = {}
        self.started = 0

    def claim(self) -> int | None:
        """The number of the next request to send, or None when the run is over."""
        with self.lock:
            if self.started >= self.max_requests or time.monotonic() > self.deadline:
                return None
            self.started += 1
            return self.started - 1

    def end(self, outcome: str, latency: float | None = None, tokens: int = 0, failure: str | None = None) -> None:
        with self.lock:
            self.ended[outcome] += 1
            self.tokens += tokens
            if latency is not None:
                self.latencies.append(latency)
            if failure is not None:
                self.failures.append(failure)
            total = sum(self.ended.values())
            if total in RSS_AT:
                self.rss[total] = rss_mb(self.pid)


def one_request(client: httpx.Client, url: str, number: int, load: Load, new_tokens: int, model: str,
                backoff: float) -> None:
    kind = ("plain", "streamed", "left")[number % 3]
    body = {"model": model, "max_tokens": new_tokens, "messages": [{"role": "user", "content": MESSAGES[number % 4]}],
            "stream": kind != "plain", "stream_options": {"include_usage": True} if kind != "plain" else None}
    start = time.perf_counter()
    try:
        with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
            if response.status_code != 200 or kind == "plain":
                response.read()
            if response.status_code == 503 and response.json()["error"]["code"] == "queue_full":
                load.end("refused")
                return time.sleep(backoff)
            if response.status_code != 200:
                return load.end("failed", failure=f"{kind}: {response.status_code} {response.text[:300]}")
            if kind == "plain":
                return load.end("plain", time.perf_counter() - start, response.json()["usage"]["completion_tokens"])
            tokens, done = 0, False
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    break
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return load.end("failed", failure=f"{kind}: error event {chunk['error']}")
                if kind == "left" and any(c["delta"].get("content") for c in chunk.get("choices", [])):
                    return load.end("left")  # leaving the `with` hangs up mid-stream
                tokens = (chunk.get("usage") or {}).get("completion_tokens", tokens)
            if not done:
                return load.end("left" if kind == "left" else "failed", failure=None if kind == "left" else f"{kind}: no [DONE]")
            load.end("streamed", time.perf_counter() - start, tokens)
    except httpx.HTTPError as error:
        load.end("failed", failure=f"{kind}: {type(error).__name__}: {error}")


def client_loop(url: str, load: Load, new_tokens: int, model: str, backoff: float) -> None:
    with httpx.Client(timeout=120) as client:
        while (number := load.claim()) is not None:
            one_request(client, url, number, load, new_tokens, model, backoff)


def percentile(values: list[float], share: float) -> float | None:
    return statistics.quantiles(values, n=100, method="inclusive")[round(share * 100) - 1] if len(values) > 1 else None


def bench() -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="anything `serve.py --checkpoint` accepts")
    parser.add_argument("--clients", type=int, default=12, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=90, help="longest run (after the server is up)")
    parser.add_argument("--max-requests", type=int, default=1100, help="requests after which the run stops")
    parser.add_argument("--new-tokens", type=int, default=8, help="the server's --max_tokens (greedy replies)")
    parser.add_argument("--backoff", type=float, default=0.5, help="seconds a refused client waits")
    parser.add_argument("--queue_size", type=int, default=8, help="the server's --queue_size")
    args = parser.parse_args()
    for flag in ("clients", "max_requests", "new_tokens"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} {getattr(args, flag)} must be >= 1")
    if args.seconds <= 0 or args.queue_size < 0 or args.backoff < 0:
        raise UserError(f"--seconds {args.seconds} must be > 0, --queue_size {args.queue_size} and --backoff "
                        f"{args.backoff} >= 0")
    server_args = ["serve.py", "--checkpoint", args.checkpoint, "--device", "cpu", "--max_tokens", str(args.new_tokens),
                   "--queue_size", str(args.queue_size)]
    load_start = os.getloadavg()[0]  # the machine may be shared: the numbers mean little under load
    with harness.server_process(server_args, cwd=ROOT) as server:
        load = Load(server.process.pid, args.max_requests, time.monotonic() + args.seconds)
        start = time.perf_counter()
        clients = [threading.Thread(target=client_loop, args=(server.url, load, args.new_tokens, args.checkpoint, args.backoff))
                   for _ in range(args.clients)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
        elapsed = time.perf_counter() - start
        deadline = time.monotonic() + 30  # hung-up generations end within a token or so
        while (pending := httpx.get(f"{server.url}/health", timeout=10).json()["pending"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        rss_end = rss_mb(server.process.pid)
    answered = load.ended["plain"] + load.ended["streamed"]
    print(json.dumps({"requests": sum(load.ended.values()), **{k: load.ended[k] for k in
                      ("plain", "streamed", "left", "refused", "failed")}, "clients": args.clients,
                      "seconds": round(elapsed, 1), "pending_after": pending}))
    p50, p95 = percentile(load.latencies, 0.5), percentile(load.latencies, 0.95)
    print(json.dumps({"latency_p50_ms": p50 and round(1000 * p50, 1), "latency_p95_ms": p95 and round(1000 * p95, 1),
                      "answered_per_s": round(answered / elapsed, 2), "tokens_per_s": round(load.tokens / elapsed, 1)}))
    first, later = (load.rss.get(n) for n in RSS_AT)
    growth = later - first if first is not None and later is not None else None
    leak = growth > LEAK_MB if growth is not None else None
    print(json.dumps({"rss_mb_after_100": first and round(first, 1), "rss_mb_after_1000": later and round(later, 1),
                      "rss_mb_at_end": round(rss_end, 1), "growth_mb": growth and round(growth, 1), "leak": leak,
                      "load_1min": [round(load_start, 2), round(os.getloadavg()[0], 2)]}), flush=True)
    for failure in load.failures[:5]:
        print(f"failed: {failure}", file=sys.stderr)
    if load.ended["failed"] or pending or leak:
        sys.exit(1)


if __name__ == "__main__":
    run_cli(bench)
