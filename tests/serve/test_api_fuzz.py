"""serve.py's API fuzzed against its own OpenAPI schema (schemathesis, `schema_fuzz`), on 127.0.0.1.

The tiny model answers at most 2 tokens, so that 500 requests cost seconds; most requests name the
served model, so that generation, not only the model check, meets the generated bodies.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schema_fuzz
import web_harness as harness
from schemathesis import Case

from empathic_lora.safety.crisis_check import CrisisCheck
from empathic_lora.serve.api_server import ServeConfig, create_app
from empathic_lora.session import trained_model

MODEL = "tiny"


@pytest.fixture(scope="module")
def url(tiny_ckpt: Path) -> Iterator[str]:
    loaded = trained_model.load(tiny_ckpt, device="cpu")
    config = ServeConfig(MODEL, loaded.default_history_turns(), CrisisCheck(), max_tokens=2, max_body_bytes=100_000)
    with harness.server_thread(create_app(loaded, config)) as served:
        yield served


def _served_model(case: Case) -> None:
    """Three requests in four name the served model (a random name only meets the 404), and half
    end on a user message (else only the 400 for a conversation with nothing to answer meets them)."""
    if not isinstance(case.body, dict):
        return
    if isinstance(case.body.get("model"), str) and len(case.body["model"]) % 4:
        case.body["model"] = MODEL
    messages = case.body.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    if isinstance(last, dict) and last.get("role") in ("system", "developer", "assistant") and len(messages) % 2:
        last["role"] = "user"  # a valid role for another: an invalid one stays, for the invalid-data cases


def test_generated_requests_get_no_5xx_and_conform_to_the_schema(url: str) -> None:
    sent = schema_fuzz.fuzz(url, examples=260, prepare=_served_model)
    chat = {status: n for (label, status), n in sent.items() if label == "POST /v1/chat/completions"}
    assert sum(sent.values()) >= 500 and chat.get(200, 0) >= 50 and chat.get(400, 0) >= 100, sent
    assert all(status < 500 for _, status in sent), sent
    assert httpx.get(f"{url}/health", timeout=10).json() == {"status": "ready", "model": MODEL, "pending": 0}


def test_unlisted_methods_are_405_with_allow(url: str) -> None:
    schema_fuzz.assert_unlisted_methods_are_405_with_allow(url)


@pytest.mark.parametrize("temperature", [2.2e-309, 1e-40, 5e-7])
def test_a_subnormal_or_tiny_temperature_is_a_400_not_a_500(url: str, temperature: float) -> None:
    """Found by schemathesis: 2.2e-309 passed `> 0` and sampling then failed on inf scores."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": temperature}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 400 and response.json()["error"]["param"] == "temperature", response.text
