"""Serving speed: first-text latency and tokens/s of a reply streamed through `serve.py`'s API,
beside chat's own (`repl.answer`, what `chat.py` runs for each message) on the same checkpoint and
prompt, side by side in one run.

    python bench/serve_latency.py --checkpoint CKPT [--base_model DIR]

`serve.py` runs in its own process, started as a user starts it (`tests/web_harness.py`'s `server_process`),
and is asked with `stream: true` over HTTP; chat's reply is generated in this process while the
server idles. The prompt is `bench/chat_latency.py`'s five-turn conversation, decoded greedily
with at most `--new-tokens` tokens: both sides run the same code on the same input, so they give
the same reply and do the same work (a line says so if the replies differ), the crisis check
included: both sides build it as `chat.py` and `serve.py` do by default (`crisis_check.build()`: with
the semantic layer when its extra is installed) and run it after the reply. Use a checkpoint
whose replies run to the limit (e.g. a random-init distilgpt2 run) so the tokens/s covers many
tokens.

- first text: from the call (chat) or the request being sent (API) to the first piece of the
  reply in hand: what a person sees first. Chat's own benchmark times the first token instead.
- tokens/s: the reply's tokens (the API's `usage.completion_tokens`) over the time from the call
  or request to the end of the answer: chat's `answer` returning (the reply and the crisis check
  after it), the API's last chunk (`finish_reason`, sent after the same check).

Repeats alternate between the sides, after one warm-up each, so that a change in machine load hits
both alike. Output: one JSON line per side (medians), then one line of API/chat ratios, the API's
extra first-text milliseconds and the machine's 1-minute load average at the start and the end.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

import httpx
import torch

# Runnable from a checkout as `python bench/...` even where the package is not pip-installed; the
# server harness is the tests' (tests/web_harness.py), not part of the package.
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
sys.path.insert(2, str(Path(__file__).resolve().parents[1] / "tests"))
import web_harness as harness  # noqa: E402

from bench.chat_latency import CONVERSATION
from empathic_lora.chat.repl import answer
from empathic_lora.errors import ArgumentParser, UserError, run_cli
from empathic_lora.lm.decoding import GenerationSettings
from empathic_lora.safety import crisis_check
from empathic_lora.session import trained_model
from empathic_lora.session.conversation_state import Conversation

ROOT = Path(__file__).resolve().parents[1]


class _TimedOutput(io.StringIO):
    """Chat's output stream, noting when the first reply text was written to it."""

    first: float | None = None

    def write(self, text: str) -> int:
        if text and self.first is None:
            self.first = time.perf_counter()
        return super().write(text)


def chat_timing(session: Conversation) -> tuple[str, float, float]:
    """Chat's answer to CONVERSATION: the reply, seconds to its first piece and to the answer's end."""
    session.history = list(CONVERSATION[:-1])
    out, notes = _TimedOutput(), io.StringIO()
    start = time.perf_counter()
    reply = answer(session, CONVERSATION[-1].text, out, "", notes)
    end = time.perf_counter()
    return reply, (out.first or end) - start, end - start


def api_timing(client: httpx.Client, url: str, new_tokens: int, model: str) -> tuple[str, float, float, int]:
    """The streamed API reply to CONVERSATION: reply, seconds to its first piece and to its end, tokens."""
    roles = {"speaker": "user", "listener": "assistant"}
    body = {
        "model": model, "stream": True, "stream_options": {"include_usage": True}, "max_tokens": new_tokens,
        "messages": [{"role": roles[turn.role], "content": turn.text} for turn in CONVERSATION],
    }
    pieces: list[str] = []
    first = end = None
    tokens = 0
    start = time.perf_counter()
    with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk["choices"]:
                if choice["delta"].get("content"):
                    pieces.append(choice["delta"]["content"])
                    first = first or time.perf_counter()
                if choice["finish_reason"]:
                    end = time.perf_counter()
    return "".join(pieces), (first or end) - start, end - start, tokens


def summary(side: str, timings: list[tuple[float, float]], tokens: int) -> dict[str, float | str | int]:
    return {
        "side": side,
        "first_text_ms": round(1000 * statistics.median(first for first, _ in timings), 1),
        "tokens_per_s": round(statistics.median(tokens / total for _, total in timings), 1),
        "new_tokens": tokens,
        "repeats": len(timings),
    }


def bench() -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="anything `chat.py --checkpoint` accepts")
    parser.add_argument("--base_model", help="local copy of the recorded base model, passed to both sides")
    parser.add_argument("--new-tokens", type=int, default=64, help="longest reply (greedy)")
    parser.add_argument("--repeats", type=int, default=5, help="timed replies per side, after one warm-up each")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads on both sides (default: torch's choice)")
    args = parser.parse_args()
    if args.new_tokens < 1 or args.repeats < 1:
        raise UserError(f"--new-tokens {args.new_tokens} and --repeats {args.repeats} must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = trained_model.load(args.checkpoint, args.base_model, device="cpu")
    session = Conversation(loaded, GenerationSettings(max_new_tokens=args.new_tokens), loaded.default_history_turns(),
                          crisis_check.build())
    server_args = ["serve.py", "--checkpoint", args.checkpoint, "--device", "cpu", "--max_tokens", str(args.new_tokens)]
    server_args += ["--base_model", args.base_model] if args.base_model else []
    runs: dict[str, list[tuple[float, float]]] = {"chat": [], "api": []}
    replies: dict[str, str] = {}
    threads = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}  # torch's thread count at startup
    load_start = os.getloadavg()[0]  # the machine may be shared: the numbers mean little under load
    with harness.server_process(server_args, cwd=ROOT, env=threads) as server, httpx.Client(timeout=300) as client:
        for repeat in range(args.repeats + 1):
            replies["chat"], first, total = chat_timing(session)
            if repeat:  # the first round warms up
                runs["chat"].append((first, total))
            replies["api"], first, total, tokens = api_timing(client, server.url, args.new_tokens, args.checkpoint)
            if repeat:
                runs["api"].append((first, total))
    if replies["chat"] != replies["api"]:
        print(f"note: the replies differ (chat {replies['chat']!r}, API {replies['api']!r})", file=sys.stderr)
    results = {side: summary(side, timings, tokens) for side, timings in runs.items()}
    for line in results.values():
        print(json.dumps({**line, "threads": torch.get_num_threads()}), flush=True)
    api, chat = results["api"], results["chat"]
    print(json.dumps({
        "ratio": "api/chat",
        "tokens_per_s": round(api["tokens_per_s"] / chat["tokens_per_s"], 3),
        "first_text_extra_ms": round(api["first_text_ms"] - chat["first_text_ms"], 1),
        "load_1min": [round(load_start, 2), round(os.getloadavg()[0], 2)],  # at the start and the end
    }))


if __name__ == "__main__":
    run_cli(bench)
