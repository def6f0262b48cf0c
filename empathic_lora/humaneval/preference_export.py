"""`python -m empathic_lora.humaneval export-pairs`: a study's judgments as preference pairs in
TRL's format (`data/preference_pairs.py`), so people's choices can train a model (`--data.pairs`).

One pair per judgment of a paired item on the chosen question: the preferred run's reply is
`chosen`, the other `rejected`, the context the one annotators saw. Ties say nothing about which
reply is better and are dropped; attention checks are not judgments of the runs; annotators the
report excludes (attention-check pass rate below `--min-pass-rate`) are excluded here too, by the
report's own `analyse`.
"""

from __future__ import annotations

from empathic_lora.conversation import parse
from empathic_lora.data.preference_pairs import Pair
from empathic_lora.errors import UserError
from empathic_lora.humaneval import report
from empathic_lora.humaneval.storage import Store


def study_pairs(store: Store, question: int, min_pass_rate: float | None) -> tuple[list[Pair], int]:
    """The pairs of 0-based `question` and the number of ties dropped."""
    questions = store.study.questions
    if not 0 <= question < len(questions):
        raise UserError(f"--question {question + 1}: the study has questions 1 to {len(questions)} ({' / '.join(questions)})")
    analysed = report.analyse(store, min_pass_rate)
    kept = {annotator.name for annotator in analysed.annotators if annotator.included}
    pairs, ties = [], 0
    for judgment in analysed.judgments:
        item = store.study.by_id[judgment.item]
        if judgment.annotator not in kept or item.kind != "pair":
            continue
        winner = judgment.winner(question)
        if winner is None:
            ties += 1
            continue
        replies = {"a": item.a, "b": item.b}
        loser = "b" if winner == "a" else "a"
        pairs.append(Pair(tuple(parse(item.context)), replies[winner], replies[loser]))
    return pairs, ties
