"""`python serve.py`: a trained model behind an OpenAI-compatible chat API and a web chat page.

- `POST /v1/chat/completions`: OpenAI's chat-completions format, plain or streamed (server-sent
  events); the fields honoured are listed in `empathic_lora.serve.openai_wire`. `GET /v1/models` lists
  the one model, `GET /health` says it is ready, `/` is the chat page (`empathic_lora/serve/page`).
- One model, many clients: one generation at a time, in one worker thread, behind a queue of
  `--queue_size` waiting requests; a request beyond that is refused with 503 at once. A reply is
  at most `--max_tokens` tokens, the prompt at most the model's context, and every message is cut
  as chat cuts it (`session.conversation_state.Conversation.fit`), so a huge body costs no more than a page (bodies over
  `--max_body_bytes` are refused with 413). A client that leaves stops its generation after the
  token being generated; a request still waiting is dropped.
- The crisis line: the request's user messages (its last `CRISIS_TURNS`) are read in order as
  chat reads a conversation (`CrisisWatch`: each with the speaker's turns before it), by the check
  chat's crisis flags configure (`crisis_check.add_flags`). When the last one signals, the content
  is `CrisisCheck.reply` and no generation runs (`--crisis_reply fixed`, the default; with `model`
  the model's reply, checked after it). When any of them signalled, the crisis message follows
  the content as a last paragraph ("\\n\\n" + message), so any OpenAI client shows it; the
  response (or, streamed, the chunk that carries that paragraph) also has a top-level
  `crisis_notice` field holding the message, which the page shows as a distinct notice. The API
  keeps no state: a conversation is the messages a request sends, so the notice stays while a
  flagged user turn is among them and a new conversation starts without it. A crisis paragraph
  sent back in an `assistant` message is dropped before prompting, as chat never puts it in the
  history; the fixed reply stays, as in chat.
- Errors have OpenAI's shape (`empathic_lora.web`). An error after a stream has started is sent
  as an event `{"error": {...}}` followed by `[DONE]`, which OpenAI's clients raise.

The prompt, decoding and stopping are chat's (`generation.stream_reply`), so a served reply with a
`seed` equals chat's reply to the same conversation with the same settings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import transformers
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from transformers import StoppingCriteria

from empathic_lora import web
from empathic_lora.conversation import Formatter, Turn, first_marker
from empathic_lora.errors import ArgumentParser, UserError, run_cli
from empathic_lora.lm.decoding import GenerationSettings, prompt_budget, stream_reply
from empathic_lora.safety import crisis_check
from empathic_lora.safety.crisis_check import CrisisCheck
from empathic_lora.serve.openai_wire import (
    CHAT_COMPLETION_RESPONSES,
    DONE,
    ChatCompletionRequest,
    Completion,
    ModelCard,
    ModelList,
    event,
    usage,
)
from empathic_lora.session import trained_model
from empathic_lora.session.conversation_state import Conversation
from empathic_lora.session.flags import add_session_flags, load_session_model

PAGE = Path(__file__).parent / "page"
# The user turns of a request the crisis check reads, newest last: a conversation's every turn, bar a
# pasted history of thousands of tiny messages, each of which would cost a check (40 ms with the
# semantic layer; each text is checked once, so a client resending its history pays only for the new turn).
CRISIS_TURNS = 100


class _Control(StoppingCriteria):
    """Asked by `generate` after every token: stops it once `stop` is set; counts the tokens."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.ids: torch.Tensor | None = None  # prompt and reply so far

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        self.ids = input_ids[0]
        return torch.full((input_ids.shape[0],), self.stop.is_set(), dtype=torch.bool, device=input_ids.device)


class _StopStrings:
    """Passes reply pieces on until one of the request's `stop` strings appears, holding back a
    tail that may still become one, as the streamer does for the turn markers."""

    def __init__(self, stops: list[str], emit: Callable[[str], None]) -> None:
        self.stops, self.emit = stops, emit
        self.text, self.sent, self.hit = "", 0, False

    def feed(self, piece: str) -> None:
        if self.hit:
            return
        self.text += piece
        found = [i for i in (self.text.find(stop) for stop in self.stops) if i != -1]
        if found:
            self.hit = True
            self._send(min(found))
            return
        held = max((k for stop in self.stops for k in range(1, len(stop)) if self.text.endswith(stop[:k])), default=0)
        self._send(len(self.text) - held)

    def finish(self) -> None:
        if not self.hit:
            self._send(len(self.text))

    def _send(self, end: int) -> None:
        if end > self.sent:
            self.emit(self.text[self.sent : end])
            self.sent = end


@dataclass
class Job:
    """One request's generation: its inputs, and what the worker reports back."""

    turns: list[Turn]
    formatter: Formatter
    settings: GenerationSettings
    stops: list[str]
    on_text: Callable[[str], None]
    speaker_turns: list[str]  # the user messages as sent, oldest first, for the crisis check
    cancel: threading.Event = field(default_factory=threading.Event)
    crisis_notice: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"


class QueueFull(Exception):
    pass


class Generator:
    """The one model, generating for one job at a time behind a bounded queue."""

    def __init__(self, loaded: trained_model.TrainedModel, queue_size: int, crisis: CrisisCheck) -> None:
        self.loaded, self.queue_size, self.crisis = loaded, queue_size, crisis
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="generate")
        self._lock = threading.Lock()
        self.pending = 0  # the job generating and those waiting for it

    def submit(self, job: Job) -> asyncio.Future:
        """The future of `job`'s run in the worker; QueueFull when `queue_size` jobs already wait."""
        with self._lock:
            if self.pending > self.queue_size:
                raise QueueFull
            self.pending += 1
        return asyncio.get_running_loop().run_in_executor(self._worker, self._run, job)

    def _run(self, job: Job) -> Job:
        try:
            if not job.cancel.is_set():  # a client that left while waiting costs nothing
                # In this thread, not the event loop, which would stall every other stream meanwhile. A fixed
                # reply needs the verdict first; the model's reply does not, and the semantic layer runs a model
                # (40 ms on 2 CPU cores) that would delay its first word, so it is checked after it, as chat does.
                fixed = self.crisis.reply
                verdict = self._hear(job) if fixed is not None else None
                if verdict is not None and verdict.signal:
                    job.on_text(fixed)  # no model ran: no tokens are counted
                else:
                    self._generate(job)
                    verdict = verdict or self._hear(job)
                job.crisis_notice = self.crisis.message if verdict.notice else None
            return job
        finally:
            with self._lock:
                self.pending -= 1

    def _hear(self, job: Job) -> crisis_check.Verdict:
        watch = self.crisis.watch()
        return [watch.hear(turn) for turn in job.speaker_turns][-1]

    def _generate(self, job: Job) -> None:
        model, tokenizer = self.loaded.model, self.loaded.tokenizer
        job.prompt_tokens = len(job.formatter.encode_prompt(job.turns, prompt_budget(model, job.settings)))
        control, stops = _Control(job.cancel), _StopStrings(job.stops, job.on_text)

        def piece(text: str) -> None:
            stops.feed(text)
            if stops.hit:
                job.cancel.set()

        stream_reply(model, job.formatter, job.turns, job.settings, piece, stopping=control)
        stops.finish()
        reply_ids = control.ids[job.prompt_tokens :] if control.ids is not None else torch.empty(0)
        job.completion_tokens = len(reply_ids)
        ended = (
            stops.hit or (len(reply_ids) > 0 and reply_ids[-1].item() == tokenizer.eos_token_id)
            or first_marker(tokenizer.decode(reply_ids, skip_special_tokens=True)) is not None
        )
        job.finish_reason = "length" if not ended and job.completion_tokens >= job.settings.max_new_tokens else "stop"


@dataclass
class ServeConfig:
    model_name: str
    history_turns: int | None
    crisis: CrisisCheck
    max_tokens: int = 256
    queue_size: int = 8
    max_body_bytes: int = 1 << 20


class ChatApi:
    """The endpoints, turning requests into `Job`s for the `Generator`."""

    def __init__(self, loaded: trained_model.TrainedModel, config: ServeConfig) -> None:
        self.loaded, self.config = loaded, config
        self.generator = Generator(loaded, config.queue_size, config.crisis)

    def job(self, request: ChatCompletionRequest, on_text: Callable[[str], None]) -> Job:
        """The conversation and settings of a request; ApiError (400) naming the field at fault, 404
        for a `model` other than the one served (OpenAI's `model_not_found`; none given: the served one)."""
        if request.model is not None and request.model != self.config.model_name:
            raise web.ApiError(404, f"The model `{request.model}` does not exist or you do not have access to it.",
                               code="model_not_found", type="invalid_request_error")
        wanted = request.new_tokens()
        settings = GenerationSettings(
            max_new_tokens=min(wanted or GenerationSettings.max_new_tokens, self.config.max_tokens), **request.sampling()
        )
        try:
            session = Conversation(self.loaded, settings, self.config.history_turns, self.config.crisis)
        except UserError:
            field = "max_tokens" if request.max_completion_tokens is None else "max_completion_tokens"
            raise web.ApiError(400, f"{field} {settings.max_new_tokens} leaves no room for a message in the model's "
                               "context", param=field) from None
        messages = [m for m in request.messages if m.role in ("user", "assistant")]
        if not messages or messages[-1].role != "user":
            raise web.ApiError(400, "the last message (system messages aside) must be a user message",
                               param="messages")
        keep = session.formatter.history_turns
        turns = []
        for message in messages[-keep:] if keep else messages:  # older turns never reach the prompt
            text = message.text()
            if message.role == "assistant":
                text = text.removesuffix(self._crisis_paragraph())
            turns.append(Turn("speaker" if message.role == "user" else "listener", session.fit(text)[0]))
        speaker_turns = [m.text() for m in messages if m.role == "user"][-CRISIS_TURNS:]
        return Job(turns, session.formatter, settings, request.stop, on_text, speaker_turns)

    def _crisis_paragraph(self) -> str:
        return f"\n\n{self.config.crisis.message}"

    async def complete(self, body: ChatCompletionRequest, request: Request) -> Any:
        if body.stream:
            return await self._stream(body)
        pieces: list[str] = []
        job = self.job(body, pieces.append)
        future = self._submit(job)
        watcher = asyncio.ensure_future(_until_disconnected(request, job.cancel))
        try:
            await future
        finally:
            watcher.cancel()
        content, notice = "".join(pieces), job.crisis_notice
        extra = {"crisis_notice": notice} if notice else {}
        return Completion(self.config.model_name).response(
            content + (self._crisis_paragraph() if notice else ""), job.finish_reason,
            usage(job.prompt_tokens, job.completion_tokens), **extra,
        )

    def _submit(self, job: Job) -> asyncio.Future:
        try:
            return self.generator.submit(job)
        except QueueFull:
            raise web.ApiError(503, f"the server is busy ({self.config.queue_size} requests are waiting); retry later",
                               code="queue_full") from None

    async def _stream(self, body: ChatCompletionRequest) -> StreamingResponse:
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        job = self.job(body, lambda text: loop.call_soon_threadsafe(pieces.put_nowait, text))
        future = self._submit(job)  # before the response starts, so that a full queue is a plain 503
        future.add_done_callback(lambda _: pieces.put_nowait(None))
        completion = Completion(self.config.model_name)
        counted = body.stream_options is not None and body.stream_options.include_usage

        async def events() -> AsyncIterator[str]:
            try:
                yield completion.chunk({"role": "assistant", "content": ""}, with_usage=counted)
                while (text := await pieces.get()) is not None:
                    yield completion.chunk({"content": text}, with_usage=counted)
                await future  # raises what the generation raised
                if job.crisis_notice:
                    yield completion.chunk({"content": self._crisis_paragraph()}, with_usage=counted,
                                           crisis_notice=job.crisis_notice)
                yield completion.chunk({}, job.finish_reason, with_usage=counted)
                if counted:
                    yield completion.usage_chunk(usage(job.prompt_tokens, job.completion_tokens))
            except Exception as error:  # the status is sent already: clients raise on an error event
                yield event(web.ApiError(500, f"generation failed ({type(error).__name__}: {error})").body())
            finally:
                job.cancel.set()  # also when the client left: Starlette cancels this generator then
            yield DONE

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _until_disconnected(request: Request, cancel: threading.Event) -> None:
    """Sets `cancel` when the client of a plain (unstreamed) request hangs up."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    cancel.set()


class Health(BaseModel):
    """`GET /health`: the model is loaded; `pending` replies are queued or being generated."""

    status: Literal["ready"]
    model: str
    pending: int


def create_app(loaded: trained_model.TrainedModel, config: ServeConfig) -> FastAPI:
    """The API and page for `loaded` (see the module doc); `harness.server_thread` serves it in a test."""
    api = ChatApi(loaded, config)
    app = web.create_app("empathic_lora serve", static_dir=PAGE, max_body_bytes=config.max_body_bytes)
    app.state.api = api

    @app.post("/v1/chat/completions", responses=CHAT_COMPLETION_RESPONSES)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        return await api.complete(body, request)

    @app.get("/v1/models")
    async def models() -> ModelList:
        return ModelList(object="list", data=[ModelCard(id=config.model_name, object="model", created=0, owned_by="empathic_lora")])

    @app.get("/health")
    async def health() -> Health:
        return Health(status="ready", model=config.model_name, pending=api.generator.pending)

    return app


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="serve.py", description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_session_flags(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (0: a free one, printed)")
    parser.add_argument("--model_name", help="the model id in the API (default: the checkpoint path as given)")
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max_tokens", type=int, default=256, help="cap on a reply's new tokens")
    limits.add_argument("--queue_size", type=int, default=8, help="requests that may wait while one generates; more get 503")
    limits.add_argument("--max_body_bytes", type=int, default=1 << 20, help="larger request bodies get 413")
    return parser


def serve(args: argparse.Namespace) -> None:
    for flag, least in (("max_tokens", 1), ("queue_size", 0), ("max_body_bytes", 1)):
        value = getattr(args, flag)
        if value is not None and value < least:
            raise UserError(f"--{flag} must be >= {least}, got {value}")
    sock = web.bind(args.host, args.port)  # a taken port fails before the model is loaded
    transformers.utils.logging.disable_progress_bar()  # a server log is read later: bars are only noise there
    with contextlib.closing(sock):
        crisis = crisis_check.from_flags(args)
        print(f"loading {args.checkpoint} ...", flush=True)
        loaded, history = load_session_model(args)
        config = ServeConfig(args.model_name or args.checkpoint, history, crisis, args.max_tokens, args.queue_size,
                             args.max_body_bytes)
        web.serve(create_app(loaded, config), sock)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run_cli(lambda: serve(args))
