"""The human-evaluation app fuzzed against its own OpenAPI schema (schemathesis, `schema_fuzz`), on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schema_fuzz
import web_harness as harness
from humaneval_samples import two_runs
from schemathesis import Case

from empathic_lora.humaneval.app import create_app
from empathic_lora.humaneval.storage import Store
from empathic_lora.humaneval.study import build_study


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, str]]:
    tmp = tmp_path_factory.mktemp("humaneval_fuzz")
    a, b = two_runs(tmp, n=6)
    store = Store.create_or_open(tmp / "study.sqlite", build_study(a, b, attention_rate=0.25))
    with harness.server_thread(create_app(store)) as url:
        yield store, url


def test_generated_requests_get_no_5xx_and_conform_to_the_schema(served: tuple[Store, str]) -> None:
    store, url = served
    ids = [item.id for item in store.study.items]

    def real_items(case: Case) -> None:
        """Half the judgments name an item of the study (a random id only meets the 404) and half
        the item indexes are in range, so that saving, not only refusing, meets the generated data."""
        if isinstance(case.body, dict) and isinstance(case.body.get("item"), str) and len(case.body["item"]) % 2:
            case.body["item"] = ids[len(case.body["item"]) % len(ids)]
        if isinstance((case.path_parameters or {}).get("index"), int) and case.path_parameters["index"] % 2:
            case.path_parameters["index"] = case.path_parameters["index"] % len(ids)

    sent = schema_fuzz.fuzz(url, examples=100, prepare=real_items)
    assert sum(sent.values()) >= 500, sent
    assert all(status < 500 for _, status in sent), sent
    for label in ("POST /api/judgments", "GET /api/items/{index}"):
        assert sent[(label, 200)] >= 5, sent
    assert httpx.get(f"{url}/health", timeout=10).json() == {"status": "ok"}
    assert httpx.get(f"{url}/api/progress", params={"annotator": "alice"}, timeout=10).status_code == 200


def test_unlisted_methods_are_405_with_allow(served: tuple[Store, str]) -> None:
    schema_fuzz.assert_unlisted_methods_are_405_with_allow(served[1])
