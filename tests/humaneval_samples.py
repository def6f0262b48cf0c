"""Small samples.jsonl files for the human-evaluation tests, in the line format `train.py test` writes
(`evaluation.records`; written here with json, as importing `evaluation` loads all of torch and Lightning)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from empathic_lora.conversation import Turn, render

RUN_A, RUN_B = "zeroshot_run_7Q", "lora_run_9X"  # directory names a blinding test looks for


def rows(n: int, reply: str, stage: str = "test", start: int = 0) -> list[dict[str, Any]]:
    """`n` samples of distinct conversations; each run's reply is `reply` formatted with the index."""
    return [
        {
            "stage": stage, "epoch": 0, "emotion": "sad",
            "context": render([Turn("speaker", f"I lost my dog number {i} yesterday."), Turn("listener", "Oh no, how?"),
                               Turn("speaker", f"He ran away, it was awful {i}.")]),
            "reference": f"I am so sorry, that must be very hard, losing dog {i}.",
            "reply": reply.format(i=i),
        }
        for i in range(start, start + n)
    ]


def two_runs(tmp: Path, n: int = 6, **kwargs: Any) -> tuple[Path, Path]:
    """Run A's and run B's samples.jsonl over the same `n` conversations."""
    a, b = tmp / RUN_A / "samples.jsonl", tmp / RUN_B / "samples.jsonl"
    write_samples(a, rows(n, "A says sorry {i}", **kwargs))
    write_samples(b, rows(n, "B says sorry {i}", **kwargs))
    return a, b



def write_samples(path: Path, lines: list[dict[str, Any]]) -> None:
    """Append, as a run does at every evaluation."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
