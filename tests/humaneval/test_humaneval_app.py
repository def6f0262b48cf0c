"""The annotation app over HTTP: every route, blinding (no run name in any response), validation
and limits, judgments surviving SIGKILL, and one-line errors at start."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest
import web_harness as harness
from conftest import ROOT, assert_one_line_error, run_python
from humaneval_samples import RUN_A, RUN_B, rows, two_runs, write_samples

from empathic_lora.humaneval.app import MAX_BODY_BYTES, create_app
from empathic_lora.humaneval.storage import Store
from empathic_lora.humaneval.study import build_study

SECRETS = (RUN_A, RUN_B, "zeroshot", "lora", "samples.jsonl", "check", "pair")  # names, paths, item kinds


@pytest.fixture
def served(tmp_path: Path):
    a, b = two_runs(tmp_path, n=6)
    store = Store.create_or_open(tmp_path / "study.sqlite", build_study(a, b, attention_rate=0.25))
    with harness.server_thread(create_app(store)) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield store, client


def assert_blind(response: httpx.Response) -> None:
    text = response.text + json.dumps(dict(response.headers)) + str(response.url)
    for secret in SECRETS:
        assert secret.lower() not in text.lower(), (secret, response.url)


def test_every_route_and_blinding(served) -> None:
    store, client = served
    study = store.study
    responses = [client.get(path) for path in ("/", "/static/app.js", "/static/style.css", "/health", "/api/study")]
    assert [r.status_code for r in responses] == [200] * 5
    assert "Compare two replies" in responses[0].text and responses[4].json()["questions"] == list(study.questions)
    progress = client.get("/api/progress", params={"annotator": "alice"}).json()
    assert progress == {"annotator": "alice", "items": 8, "judged": 0, "next": 0}
    seen = []
    for k in range(8):
        response = client.get(f"/api/items/{k}", params={"annotator": "alice"})
        responses.append(response)
        shown = response.json()
        item = study.order("alice")[k]
        assert shown["item"] == item.id and shown["previous"] is None and shown["index"] == k
        assert shown["replies"] == ([item.a, item.b] if study.first("alice", item.id) == "a" else [item.b, item.a])
        assert [t["role"] for t in shown["turns"]] == ["speaker", "listener", "speaker"]
        saved = client.post("/api/judgments", json={"annotator": "alice", "item": item.id, "answers": ["1", "2", "tie"],
                                                    "ratings": [5, None], "seconds": 7.5})
        responses.append(saved)
        assert saved.json() == {"saved": True, "replaced": False, "annotator": "alice", "items": 8, "judged": k + 1,
                                "next": k + 1 if k < 7 else None}
        seen.append(shown["item"])
    assert sorted(seen) == sorted(item.id for item in study.items)
    again = client.post("/api/judgments", json={"annotator": "alice", "item": seen[2], "answers": ["2", "2", "2"],
                                                "ratings": [None, None], "seconds": 3})
    assert again.json()["replaced"] is True
    assert client.get("/api/items/2", params={"annotator": "alice"}).json()["previous"] == {
        "answers": ["2", "2", "2"], "ratings": [None, None]}
    # Which side was reply 1 is stored with the judgment, from the same seeded coin the page used.
    assert {(j.item, j.first) for j in store.judgments()} == {(i, study.first("alice", i)) for i in seen}
    for response in responses:
        assert_blind(response)


@pytest.mark.parametrize(
    "body, status, param",
    [
        ({"annotator": "<script>", "item": "x", "answers": ["1"], "seconds": 1}, 400, "annotator"),
        ({"annotator": "alice", "item": "nope", "answers": ["1", "1", "1"], "seconds": 1}, 404, "item"),
        ({"annotator": "alice", "item": "ITEM", "answers": ["1"], "seconds": 1}, 400, "answers"),
        ({"annotator": "alice", "item": "ITEM", "answers": ["1", "3", "1"], "seconds": 1}, 400, "answers[1]"),
        ({"annotator": "alice", "item": "ITEM", "answers": ["1", "1", "1"], "ratings": [6, None], "seconds": 1}, 400, "ratings[0]"),
        ({"annotator": "alice", "item": "ITEM", "answers": ["1", "1", "1"], "seconds": -1}, 400, "seconds"),
        ({"annotator": "alice", "item": "ITEM", "answers": ["1", "1", "1"], "seconds": 1, "run": "a"}, 400, "run"),
    ],
)
def test_a_bad_judgment_is_refused_naming_the_field(served, body: dict, status: int, param: str) -> None:
    store, client = served
    body = {**body, "item": store.study.items[0].id if body["item"] == "ITEM" else body["item"]}
    response = client.post("/api/judgments", json=body)
    assert response.status_code == status and response.json()["error"]["param"] == param, response.text
    assert store.judgments() == []


def test_bounds_on_requests(served) -> None:
    store, client = served
    huge = {"annotator": "alice", "item": store.study.items[0].id, "answers": ["1"] * 3, "seconds": 1, "x": "y" * MAX_BODY_BYTES}
    assert client.post("/api/judgments", json=huge).status_code == 413
    assert client.post("/api/judgments", content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    assert client.get("/api/items/8", params={"annotator": "alice"}).status_code == 404
    assert client.get("/api/items/0", params={"annotator": "x" * 65}).status_code == 400
    assert client.get("/api/progress").status_code == 400
    assert store.judgments() == []


def test_acknowledged_judgments_survive_sigkill(tmp_path: Path) -> None:
    a, b = two_runs(tmp_path, n=60)
    db = tmp_path / "study.sqlite"
    argv = ["-m", "empathic_lora.humaneval", "serve", "--a", str(a), "--b", str(b), "--db", str(db)]
    acknowledged: list[str] = []
    with harness.server_process(argv, cwd=ROOT) as server:
        client = httpx.Client(base_url=server.url, timeout=30)
        count = client.get("/api/study").json()["items"]
        order = [client.get(f"/api/items/{k}", params={"annotator": "kim"}).json()["item"] for k in range(count)]
        killed = threading.Event()

        def annotate() -> None:
            for item in order:
                try:
                    response = client.post("/api/judgments", json={"annotator": "kim", "item": item,
                                                                   "answers": ["1", "tie", "2"], "seconds": 2})
                except httpx.TransportError:
                    return  # the server died mid-request: this one was never acknowledged
                if response.status_code == 200:
                    acknowledged.append(item)
                if killed.is_set():
                    return

        worker = threading.Thread(target=annotate)
        worker.start()
        while len(acknowledged) < 5 and worker.is_alive():
            threading.Event().wait(0.01)
        server.process.kill()  # SIGKILL while judgments keep arriving
        killed.set()
        worker.join(60)
        server.process.wait()
    stored = {j.item for j in Store.open_existing(db).judgments()}
    assert 5 <= len(acknowledged) < len(order)  # killed between judgments, not after the last
    assert set(acknowledged) <= stored
    with harness.server_process(argv, cwd=ROOT) as server:  # the same study reopens and continues
        progress = httpx.get(f"{server.url}/api/progress", params={"annotator": "kim"}, timeout=30).json()
    assert progress["judged"] == len(stored) and progress["next"] == order.index(next(i for i in order if i not in stored))


def test_start_errors_are_one_line(tmp_path: Path) -> None:
    a, b = two_runs(tmp_path, n=3)
    db = tmp_path / "study.sqlite"
    serve = ["-m", "empathic_lora.humaneval", "serve", "--db", str(db)]
    assert_one_line_error(run_python(*serve, "--a", str(tmp_path / "none.jsonl"), "--b", str(b)), "--a", "none.jsonl")
    other = tmp_path / "other" / "samples.jsonl"
    write_samples(other, rows(2, "x {i}", start=40))
    assert_one_line_error(run_python(*serve, "--a", str(a), "--b", str(other)), "share no context")
    Store.create_or_open(db, build_study(a, b))
    assert_one_line_error(run_python(*serve, "--a", str(b), "--b", str(a)), f"--db {db} holds another study")
    assert_one_line_error(run_python(*serve, "--a", str(a), "--b", str(b), "--attention-rate", "x"), "--attention-rate")


def test_serves_this_machine_only_unless_told() -> None:
    from empathic_lora.humaneval.__main__ import parser

    args = parser().parse_args(["serve", "--a", "a.jsonl", "--b", "b.jsonl", "--db", "s.sqlite"])
    assert (args.host, args.port) == ("127.0.0.1", 8001)
