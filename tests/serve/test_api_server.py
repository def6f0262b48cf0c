"""serve.py's OpenAI-compatible API, through the official `openai` client against a server on 127.0.0.1.

The app runs in a thread of this process (`harness.server_thread`) so that a test can slow the
model down or make it fail part way, through a hook on its token embedding; `serve.py` itself runs
as a subprocess in the CLI tests.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import torch
import web_harness as harness
from conftest import ROOT, assert_one_line_error, run_main, run_python

from empathic_lora.lm.decoding import GenerationSettings
from empathic_lora.safety.crisis_check import DEFAULT_MESSAGE, DEFAULT_REPLY, CrisisCheck
from empathic_lora.serve import api_server
from empathic_lora.serve.api_server import ServeConfig, create_app
from empathic_lora.session import trained_model

MESSAGE = "I feel overwhelmed with work"


@pytest.fixture(scope="module")
def loaded(tiny_ckpt: Path) -> trained_model.TrainedModel:
    return trained_model.load(tiny_ckpt, device="cpu")


def config(loaded: trained_model.TrainedModel, **limits: int) -> ServeConfig:
    return ServeConfig("tiny", loaded.default_history_turns(), CrisisCheck(), **limits)


@pytest.fixture(scope="module")
def url(loaded: trained_model.TrainedModel) -> Iterator[str]:
    with harness.server_thread(create_app(loaded, config(loaded, max_tokens=100, max_body_bytes=100_000))) as served:
        yield served


@pytest.fixture
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def hook(model: torch.nn.Module, each_token) -> torch.utils.hooks.RemovableHandle:
    """Calls `each_token(n)` at the n-th forward pass of the model (1: the prompt), via its token embedding."""
    embedding = model.get_input_embeddings()
    calls = [0]

    def on_forward(module, args):
        calls[0] += 1
        each_token(calls[0])

    return embedding.register_forward_pre_hook(on_forward)


@pytest.fixture
def slow_and_long(loaded: trained_model.TrainedModel, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """Every reply runs to its token limit at about 30 ms a token; yields the times of the forward passes."""
    original = GenerationSettings.generation_config

    def full_length(self, tokenizer):
        config = original(self, tokenizer)
        config.min_new_tokens = self.max_new_tokens  # eos cannot end it early
        config.stop_strings = None  # nor a marker
        return config

    monkeypatch.setattr(GenerationSettings, "generation_config", full_length)
    times: list[float] = []
    handle = hook(loaded.model, lambda n: (times.append(time.monotonic()), time.sleep(0.03)))
    yield times
    handle.remove()


def test_models_and_health(client: openai.OpenAI, url: str) -> None:
    assert [model.id for model in client.models.list()] == ["tiny"]
    assert httpx.get(f"{url}/health").json()["status"] == "ready"
    # Typed in the OpenAPI schema, so that schemathesis checks these bodies too, not only the chat's.
    paths = httpx.get(f"{url}/openapi.json").json()["paths"]
    for path, schema in (("/v1/models", "ModelList"), ("/health", "Health")):
        assert paths[path]["get"]["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{schema}"}


def test_plain_and_streamed_replies_agree_in_openais_format(client: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "ignored"}, {"role": "user", "content": MESSAGE}]
    plain = client.chat.completions.create(model="tiny", messages=messages)
    assert plain.object == "chat.completion" and plain.choices[0].message.role == "assistant"
    assert plain.choices[0].message.content
    assert plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens
    chunks = list(client.chat.completions.create(
        model="tiny", messages=messages, stream=True, stream_options={"include_usage": True}
    ))
    assert len({chunk.id for chunk in chunks}) == 1 and len({chunk.created for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    *content, last, usage = chunks
    assert "".join(c.choices[0].delta.content or "" for c in content) == plain.choices[0].message.content
    assert all(c.choices[0].finish_reason is None for c in content)
    assert last.choices[0].delta.content is None and last.choices[0].finish_reason == plain.choices[0].finish_reason
    assert usage.choices == [] and usage.usage == plain.usage


def test_max_tokens_ends_with_length(client: openai.OpenAI) -> None:
    for stream in (False, True):
        reply = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": MESSAGE}], max_tokens=2, stream=stream,
            **({"stream_options": {"include_usage": True}} if stream else {}),
        )
        if stream:
            chunks = list(reply)
            assert chunks[-2].choices[0].finish_reason == "length"
            assert chunks[-1].usage.completion_tokens == 2
        else:
            assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 2


def test_a_stop_string_ends_the_reply_before_it(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": MESSAGE}]
    full = client.chat.completions.create(model="tiny", messages=messages).choices[0].message.content
    stop = full.split()[1]
    for stream in (False, True):
        reply = client.chat.completions.create(model="tiny", messages=messages, stop=[stop], stream=stream)
        if stream:
            chunks = list(reply)
            text, finish = "".join(c.choices[0].delta.content or "" for c in chunks), chunks[-1].choices[0].finish_reason
        else:
            text, finish = reply.choices[0].message.content, reply.choices[0].finish_reason
        assert text == full[: full.index(stop)] and finish == "stop"


@pytest.mark.parametrize(
    ("request_fields", "param"),
    [
        ({"temperature": -0.5}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 2}, "n"),
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ],
)
def test_a_bad_request_raises_the_clients_error_naming_the_field(
    client: openai.OpenAI, request_fields: dict, param: str
) -> None:
    fields = {"model": "tiny", "messages": [{"role": "user", "content": MESSAGE}], **request_fields}
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(**fields)
    assert raised.value.status_code == 400
    assert raised.value.body["param"] == param and raised.value.body["type"] == "invalid_request_error"


def test_an_unknown_model_is_openais_404_and_the_served_id_or_none_is_accepted(client: openai.OpenAI, url: str) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": MESSAGE}], stream=True)
    assert raised.value.body == {"message": "The model `gpt-4o` does not exist or you do not have access to it.",
                                 "type": "invalid_request_error", "param": None, "code": "model_not_found"}
    for model in ({"model": "tiny"}, {"model": None}, {}):  # the page sends null until it has read /v1/models
        body = {**model, "messages": [{"role": "user", "content": MESSAGE}], "max_tokens": 2}
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        assert response.status_code == 200 and response.json()["model"] == "tiny", model


def test_an_oversized_body_is_413(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x" * 200_000}])
    assert raised.value.status_code == 413 and raised.value.body["code"] == "body_too_large"


def test_an_error_mid_stream_raises_in_the_client(client: openai.OpenAI, loaded: trained_model.TrainedModel) -> None:
    def fail(n: int) -> None:
        if n == 6:
            raise RuntimeError("the model broke")

    handle = hook(loaded.model, fail)
    try:
        stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": MESSAGE}], stream=True)
        received = []
        with pytest.raises(openai.APIError, match="the model broke"):
            for chunk in stream:
                received.append(chunk)
        assert received and received[0].choices[0].delta.role == "assistant"  # the stream had started
    finally:
        handle.remove()
    assert client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": MESSAGE}]).choices


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_leaves_stops_its_generation(url: str, slow_and_long: list[float], stream: bool) -> None:
    body = {"model": "tiny", "messages": [{"role": "user", "content": MESSAGE}], "max_tokens": 100, "stream": stream}
    if stream:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as response:
            for line in response.iter_lines():
                if '"content":' in line and '"content":""' not in line.replace(" ", ""):
                    break  # the first piece of the reply
            left = time.monotonic()
    else:
        with pytest.raises(httpx.ReadTimeout):  # the client gives up and hangs up
            httpx.post(f"{url}/v1/chat/completions", json=body, timeout=1)
        left = time.monotonic()
    deadline = time.monotonic() + 20
    while httpx.get(f"{url}/health").json()["pending"] and time.monotonic() < deadline:
        time.sleep(0.05)
    after = [t for t in slow_and_long if t > left]
    assert len(after) <= 3, f"{len(after)} tokens were generated after the client left"
    assert len(slow_and_long) < 50  # uncancelled: 100 tokens


def test_a_burst_is_answered_or_refused_and_the_server_stays_up(loaded, slow_and_long: list[float]) -> None:
    with harness.server_thread(create_app(loaded, config(loaded, queue_size=2))) as small:
        body = {"model": "tiny", "messages": [{"role": "user", "content": MESSAGE}], "max_tokens": 4}

        def post(i: int) -> tuple[int, dict]:
            response = httpx.post(f"{small}/v1/chat/completions", json={**body, "stream": i % 2 == 1}, timeout=60)
            if response.status_code == 200 and i % 2:
                return 200, {"events": response.text.count("data: ")}
            return response.status_code, response.json()

        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            results = list(pool.map(post, range(20)))  # none may hang: each has a timeout
        statuses = [status for status, _ in results]
        assert set(statuses) == {200, 503}, statuses
        assert statuses.count(200) >= 3  # the one generating and the two waiting
        for status, payload in results:
            if status == 503:
                assert payload["error"]["code"] == "queue_full"
        health = httpx.get(f"{small}/health", timeout=10)
        assert health.status_code == 200 and health.json()["pending"] == 0


def _forward_passes(loaded: trained_model.TrainedModel, ask) -> tuple[object, int]:
    """What `ask()` returns, and how many forward passes of the model it took: 0 when nothing was generated."""
    passes: list[int] = []
    handle = hook(loaded.model, passes.append)
    try:
        return ask(), len(passes)
    finally:
        handle.remove()


def test_a_crisis_message_gets_the_fixed_reply_and_no_generation(client: openai.OpenAI, loaded: trained_model.TrainedModel) -> None:
    messages = [{"role": "user", "content": "I want to die"}]
    expected = f"{DEFAULT_REPLY}\n\n{DEFAULT_MESSAGE}"
    plain, passes = _forward_passes(loaded, lambda: client.chat.completions.create(model="tiny", messages=messages))
    assert passes == 0 and plain.choices[0].message.content == expected
    assert plain.model_extra["crisis_notice"] == DEFAULT_MESSAGE and plain.choices[0].finish_reason == "stop"
    chunks, passes = _forward_passes(
        loaded, lambda: list(client.chat.completions.create(model="tiny", messages=messages, stream=True)))
    flagged = [c for c in chunks if (c.model_extra or {}).get("crisis_notice")]
    assert passes == 0 and len(flagged) == 1 and flagged[0].choices[0].delta.content == f"\n\n{DEFAULT_MESSAGE}"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected
    # Split across turns, the signal is read together ("i just want to" alone is harmless).
    split = [{"role": "user", "content": "i just want to"}, {"role": "assistant", "content": "go on"},
             {"role": "user", "content": "die"}]
    alone = client.chat.completions.create(model="tiny", messages=split[:1])
    assert "crisis_notice" not in (alone.model_extra or {})
    joined, passes = _forward_passes(loaded, lambda: client.chat.completions.create(model="tiny", messages=split))
    assert passes == 0 and joined.choices[0].message.content == expected


def test_the_notice_stays_while_the_conversation_holds_a_signal(
    client: openai.OpenAI, loaded: trained_model.TrainedModel
) -> None:
    crisis = [{"role": "user", "content": "I want to die"},
              {"role": "assistant", "content": f"{DEFAULT_REPLY}\n\n{DEFAULT_MESSAGE}"}]
    later = [*crisis, {"role": "user", "content": MESSAGE}, {"role": "assistant", "content": "ok"},
             {"role": "user", "content": "thanks"}, {"role": "assistant", "content": "sure"},
             {"role": "user", "content": "what a day"}]  # the crisis turn is out of the window of 3 by now
    followed, passes = _forward_passes(loaded, lambda: client.chat.completions.create(model="tiny", messages=later))
    content = followed.choices[0].message.content
    assert passes > 0 and followed.model_extra["crisis_notice"] == DEFAULT_MESSAGE  # the model replies, the line stays
    assert content.endswith(f"\n\n{DEFAULT_MESSAGE}") and not content.startswith(DEFAULT_REPLY)
    # Sent back as history, the paragraph is dropped and the fixed reply kept: the prompt is the one without it.
    bare = [{**m, "content": m["content"].removesuffix(f"\n\n{DEFAULT_MESSAGE}")} for m in later]
    assert followed.usage == client.chat.completions.create(model="tiny", messages=bare).usage
    fresh = client.chat.completions.create(model="tiny", messages=later[2:])  # a new conversation
    assert "crisis_notice" not in (fresh.model_extra or {}) and DEFAULT_MESSAGE not in fresh.choices[0].message.content


def test_crisis_reply_model_keeps_the_generated_reply(loaded: trained_model.TrainedModel) -> None:
    research = ServeConfig("tiny", loaded.default_history_turns(), CrisisCheck(reply=None), max_tokens=8)
    with harness.server_thread(create_app(loaded, research)) as served:
        client = openai.OpenAI(base_url=f"{served}/v1", api_key="unused", max_retries=0, timeout=60)
        messages = [{"role": "user", "content": "I want to die"}]
        plain, passes = _forward_passes(loaded, lambda: client.chat.completions.create(model="tiny", messages=messages))
    content = plain.choices[0].message.content
    assert passes > 0 and content.endswith(f"\n\n{DEFAULT_MESSAGE}") and DEFAULT_REPLY not in content
    assert plain.model_extra["crisis_notice"] == DEFAULT_MESSAGE


def test_a_seeded_reply_equals_chats(client: openai.OpenAI, tiny_ckpt: Path) -> None:
    first, second = MESSAGE, "My boss keeps adding projects"
    flags = ["--do_sample", "--temperature", "0.9", "--top_p", "0.95", "--seed", "5"]
    chat = run_python("chat.py", "--checkpoint", str(tiny_ckpt), *flags, input=f"{first}\n{second}\n")
    assert chat.returncode == 0, chat.stderr
    chat_replies = chat.stdout.splitlines()
    settings = {"temperature": 0.9, "top_p": 0.95, "seed": 5}
    served = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": first}], **settings)
    assert served.choices[0].message.content == chat_replies[0]
    conversation = [{"role": "user", "content": first}, {"role": "assistant", "content": chat_replies[0]},
                    {"role": "user", "content": second}]
    served = client.chat.completions.create(model="tiny", messages=conversation, **settings)
    assert served.choices[0].message.content == chat_replies[1]


def test_serve_py_answers_as_a_user_starts_it(tiny_ckpt: Path) -> None:
    with harness.server_process(["serve.py", "--checkpoint", str(tiny_ckpt)], cwd=ROOT) as server:
        response = httpx.post(f"{server.url}/v1/chat/completions", timeout=60,
                              json={"model": str(tiny_ckpt), "messages": [{"role": "user", "content": MESSAGE}]})
        assert response.status_code == 200 and response.json()["model"] == str(tiny_ckpt)
        page = httpx.get(f"{server.url}/")
        assert "chat.js" in page.text and "default-src 'self'" in page.headers["content-security-policy"]
        port = server.url.rsplit(":", 1)[1]
        taken = run_python("serve.py", "--checkpoint", str(tiny_ckpt), "--port", port)
        assert taken.returncode == 2
        assert_one_line_error(taken, f"--port {port}", "already in use")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--checkpoint", "no/such.ckpt"], "no/such.ckpt"),
        (["--checkpoint", "x", "--queue_size", "-1"], "--queue_size"),
        (["--checkpoint", "x", "--port", "99999"], "--port 99999"),
        (["--checkpoint", "x", "--port", "0", "--crisis_phrases_only"], "--crisis_phrases_only needs --crisis_phrases"),
    ],
)
def test_bad_cli_input_is_one_line(args: list[str], needle: str) -> None:
    result = run_main(api_server.main, *args)
    assert result.returncode == 2
    assert_one_line_error(result, needle)
