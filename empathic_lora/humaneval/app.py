"""The annotation app's routes, on the shared web layer (`empathic_lora.web`).

Blinding: nothing here sends a run's name or path, which side an item's reply 1 comes from, or
whether an item is an attention check. Items go out as opaque ids, the conversation turns and the
two replies in the order shown; the page (static/) renders all of it as text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from empathic_lora import web
from empathic_lora.conversation import parse
from empathic_lora.humaneval.storage import Store

STATIC_DIR = Path(__file__).parent / "static"
# A judgment is a few hundred bytes; anything near this is not one.
MAX_BODY_BYTES = 16 * 1024
RATINGS = (1, 5)

# Names go into URLs and the CSV: printable, no markup characters, bounded. ASCII spelled out: `\w`
# is any letter to the server's regex engine but ASCII to JSON Schema, so the OpenAPI schema said less.
AnnotatorName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_ .@-]*$")]
Rating = Annotated[int, Field(ge=RATINGS[0], le=RATINGS[1])]


class JudgmentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    annotator: AnnotatorName
    item: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    answers: list[Literal["1", "2", "tie"]] = Field(max_length=64)  # one per question, in order
    ratings: tuple[Rating | None, Rating | None] = (None, None)  # of reply 1 and reply 2 as shown
    seconds: float = Field(ge=0, le=86_400)  # from showing the item to submitting it


def create_app(store: Store) -> FastAPI:
    """The app serving `store`'s study: the page at `/`, its JSON API under `/api`."""
    study = store.study
    app = web.create_app("empathic_lora human evaluation", static_dir=STATIC_DIR, max_body_bytes=MAX_BODY_BYTES)

    def progress(annotator: str) -> dict[str, Any]:
        judged = {j.item for j in store.judgments(annotator)}
        order = study.order(annotator)
        following = next((k for k, item in enumerate(order) if item.id not in judged), None)
        return {"annotator": annotator, "items": len(order), "judged": len(judged), "next": following}

    # Plain `def` routes: FastAPI runs them on its thread pool, so SQLite's blocking commits
    # (an fsync each) never stall the event loop.
    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/study")
    def describe() -> dict[str, Any]:
        return {"questions": list(study.questions), "items": len(study.items), "ratings": list(RATINGS)}

    @app.get("/api/progress")
    def get_progress(annotator: Annotated[AnnotatorName, Query()]) -> dict[str, Any]:
        return progress(annotator)

    @app.get("/api/items/{index}")
    def get_item(index: int, annotator: Annotated[AnnotatorName, Query()]) -> dict[str, Any]:
        order = study.order(annotator)
        if not 0 <= index < len(order):
            raise web.ApiError(404, f"item {index}: this study has items 0..{len(order) - 1}", param="index", code="no_such_item")
        item = order[index]
        first = study.first(annotator, item.id)
        replies = [item.a, item.b] if first == "a" else [item.b, item.a]
        earlier = next((j for j in store.judgments(annotator) if j.item == item.id), None)
        return {
            "index": index,
            "items": len(order),
            "item": item.id,
            "turns": [{"role": t.role, "text": t.text} for t in parse(item.context)],
            "replies": replies,
            "previous": None if earlier is None else {"answers": list(earlier.answers), "ratings": list(earlier.ratings)},
        }

    @app.post("/api/judgments")
    def post_judgment(body: JudgmentBody) -> dict[str, Any]:
        if body.item not in study.by_id:
            raise web.ApiError(404, f"item {body.item!r} is not in this study", param="item", code="no_such_item")
        if len(body.answers) != len(study.questions):
            raise web.ApiError(400, f"answers: expected {len(study.questions)} answers, one per question, got "
                               f"{len(body.answers)}", param="answers", code="invalid_value")
        replaced = store.save(body.annotator, body.item, body.answers, body.ratings, body.seconds)
        return {"saved": True, "replaced": replaced, **progress(body.annotator)}

    return app
