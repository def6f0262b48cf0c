"""The OpenAI chat-completions wire format as `serve.py` speaks it: the request it accepts and the
response, chunk and server-sent-event bodies it sends.

Honoured request fields (anything else OpenAI defines is accepted and ignored):

- `messages`: `user` turns are the speaker, `assistant` turns the listener, in the one conversation
  format (`conversation.Formatter`); `system` and `developer` messages are ignored, because the
  model was trained on dialogues without one. Content is a string or a list of `text` parts.
- `max_completion_tokens` (or the older `max_tokens`): the longest reply, capped by the server.
- `temperature`: absent or 0 is greedy decoding, chat's default; above 0 samples at that
  temperature. `top_p` samples with that nucleus (temperature 1 when none is given). Sampling
  keeps chat's other defaults (`top_k` 50).
- `seed`: the same conversation and settings give the same reply, here and in `chat.py --seed`.
- `stop`: up to 4 strings; the reply ends before the first one.
- `stream`, `stream_options.include_usage`; `n` must be 1.
- `model`: the served model's id (`serve.py --model_name`, by default the checkpoint path as given;
  `GET /v1/models` lists it); any other name is OpenAI's 404 `model_not_found` error. OpenAI requires
  the field; here an absent or null `model` means the served one, as the chat page sends it before
  it has read `/v1/models`.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from empathic_lora.lm.decoding import setting_problem


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None  # an assistant message may carry none

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


def _in_range(setting: str, value: float | None) -> float | None:
    problem = None if value is None else setting_problem(setting, value)
    if problem:  # the message is chat's own, without pydantic's "Value error, " in front
        raise PydanticCustomError("out_of_range", problem)
    return value


class ChatCompletionRequest(BaseModel):
    """The honoured fields of a `POST /v1/chat/completions` body (see the module doc)."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = Field(None, validate_default=True)  # always a list once validated
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1

    @field_validator("max_tokens", "max_completion_tokens")
    @classmethod
    def _max_tokens(cls, value: int | None) -> int | None:
        return _in_range("max_new_tokens", value)

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, value: float | None) -> float | None:
        return value if value == 0 else _in_range("temperature", value)  # 0: greedy, as in OpenAI's API

    @field_validator("top_p")
    @classmethod
    def _top_p(cls, value: float | None) -> float | None:
        return _in_range("top_p", value)

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> list[str]:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > 4 or not all(stops):
            raise PydanticCustomError("stop", "must be up to 4 non-empty strings")
        return stops

    @field_validator("n")
    @classmethod
    def _n(cls, value: int) -> int:
        if value != 1:
            raise PydanticCustomError("n", "only n=1 is served (one reply per request), got {n}", {"n": value})
        return value

    def new_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def sampling(self) -> dict[str, Any]:
        """The `GenerationSettings` fields this request sets, other than the reply length."""
        sample = bool(self.temperature) or (self.temperature is None and self.top_p is not None)
        settings: dict[str, Any] = {"do_sample": sample, "seed": self.seed}
        if sample:
            settings["temperature"] = self.temperature or 1.0
            settings["top_p"] = self.top_p if self.top_p is not None else 1.0
        return settings


class ReplyMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class Choice(BaseModel):
    index: int
    message: ReplyMessage
    logprobs: None
    finish_reason: Literal["stop", "length"]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    """A plain reply's body as `Completion.response` writes it, for the OpenAPI schema."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    crisis_notice: str | None = None


class ModelCard(BaseModel):
    """One model of `GET /v1/models`, as OpenAI's Model object."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


# The 200 of `POST /v1/chat/completions`: a `ChatCompletion`, or with `stream` the server-sent events.
CHAT_COMPLETION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": ChatCompletion, "description": "The reply; with `stream`, server-sent events of "
          "`chat.completion.chunk` bodies ended by `data: [DONE]`",
          # OpenAPI 3.1 reads a stream's `schema` as that of each event.
          "content": {"text/event-stream": {"schema": {"type": "object", "required": ["data"],
                                                       "properties": {"data": {"type": "string"}}}}}},
}


class Completion:
    """The ids and bodies of one completion: one id and `created` for a whole stream."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def response(self, content: str, finish_reason: str, usage: dict[str, int], **extra: Any) -> dict[str, Any]:
        choice = {"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": None,
                  "finish_reason": finish_reason}
        return {**self._head("chat.completion"), "choices": [choice], "usage": usage, **extra}

    def chunk(self, delta: dict[str, str], finish_reason: str | None = None, with_usage: bool = False,
              **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        body = {**self._head("chat.completion.chunk"), "choices": [choice], **extra}
        if with_usage:  # with include_usage, every chunk but the last carries "usage": null
            body["usage"] = None
        return event(body)

    def usage_chunk(self, usage: dict[str, int]) -> str:
        return event({**self._head("chat.completion.chunk"), "choices": [], "usage": usage})


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def event(data: dict[str, Any] | str) -> str:
    """One server-sent event. Hand-written: it is one line, and OpenAI's stream uses no other field."""
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


DONE = event("[DONE]")
