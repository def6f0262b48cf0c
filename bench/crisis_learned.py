"""The learned crisis layer (`empathic_lora/safety/learned_layer.py`): how it generalises, estimated by
leave-one-file-group-out cross-validation on `bench/crisis_set/`, and the training of its shipped
weights.

    python bench/crisis_learned.py              # cross-validation: per held-out group, each check's recall and false alarms
    python bench/crisis_learned.py --exemplars  # also the exemplar layer (before), and both as chat runs them
    python bench/crisis_learned.py --write      # train on every group and write the shipped weights

Each group of files (the tuning part, the held-out part, each probe, the frozen set of issue 23, the
conversations) is held out in turn: the regression is trained on the other groups and on the
`train_*` files (always in training), and its threshold is chosen without the held-out group too,
by an inner leave-one-group-out over the training groups: the lowest threshold at which at most 5%
of their inner held-out negatives fire. The held-out group is then read as chat reads it: a
message by `CrisisCheck.signals` (patterns first, the layer when none matched), a conversation turn
by turn through the window (`CrisisWatch`). The shipped threshold is chosen the same way over all
groups. The patterns' numbers are not held out (they were tuned on every group), nor the exemplar
layer's on the tuning part (its threshold and margin); the learned layer's are. Milliseconds per
message are the semantic layer's own time (its fastest of `--repeats`), on whatever CPUs this runs.
"""

from __future__ import annotations

import functools
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
sys.path.insert(1, str(Path(__file__).resolve().parent))
import crisis_check as bench  # noqa: E402  (bench/crisis_check.py: the set's reader and scores)

from empathic_lora.errors import ArgumentParser, UserError, run_cli  # noqa: E402
from empathic_lora.safety import learned_layer, semantic_layer  # noqa: E402
from empathic_lora.safety.crisis_check import CrisisCheck, sentences  # noqa: E402

GROUPS: dict[str, tuple[str, str]] = {
    **bench.PARTS,
    "frozen": bench.FROZEN,
    "conversations": bench.CONVERSATIONS,
    "frozen conversations": bench.FROZEN_CONVERSATIONS,
}
CONVERSATION_GROUPS = ("conversations", "frozen conversations", "train conversations")
TRAIN = {  # written for training only (README.md): never held out
    "train": ("train_crisis.txt", "train_negatives.txt"),
    "train conversations": ("train_conversations_crisis.txt", "train_conversations_negatives.txt"),
}
FALSE_ALARMS = 0.05


def training_text(example: bench.Example) -> str:
    """A conversation is learned as its turns joined, as the check's window reads them."""
    return " ".join(bench.turns(example)) if example.part in CONVERSATION_GROUPS else example.text


def load(set_dir: Path) -> list[bench.Example]:
    return bench.load_set(set_dir, {**GROUPS, **TRAIN})


class Folds:
    """The set embedded once; fits and scores by group."""

    def __init__(self, examples: list[bench.Example], embed: learned_layer.Embedder) -> None:
        self.examples = examples
        self.embedded = embed([training_text(e) for e in examples])

    def fit(self, without: frozenset[str]) -> tuple[torch.Tensor, float]:
        kept = [i for i, e in enumerate(self.examples) if e.part not in without]
        coef, intercept = learned_layer.fit([self.embedded[i] for i in kept], [self.examples[i].crisis for i in kept])
        return torch.tensor(coef), intercept

    def negative_scores(self, group: str, coef: torch.Tensor, intercept: float) -> list[float]:
        return [learned_layer.score(self.embedded[i], coef, intercept)
                for i, e in enumerate(self.examples) if e.part == group and not e.crisis]

    @functools.cache
    def weights(self, without: frozenset[str]) -> learned_layer.Weights:
        """Fit without the groups `without`, and the lowest threshold at which at most `FALSE_ALARMS`
        of the negatives of the other groups fire, each group scored by a fit without it too."""
        coef, intercept = self.fit(without)
        inner = [g for g in GROUPS if g not in without]
        scores = sorted((s for g in inner for s in self.negative_scores(g, *self.fit(without | {g}))), reverse=True)
        threshold = scores[int(FALSE_ALARMS * len(scores))] + 1e-6  # this many may fire: just above the next one
        return learned_layer.Weights(coef.tolist(), intercept, threshold, learned_layer.digest(
            (training_text(e), e.crisis) for e in self.examples if e.part not in without))


def score_group(examples: list[bench.Example], group: str, check: CrisisCheck) -> bench.Score:
    cases = [e for e in examples if e.part == group]
    read = bench.conversation_flagged(check) if group in CONVERSATION_GROUPS else check.signals
    return bench.evaluate(read, cases).parts["all"]


def line(name: str, score: bench.Score) -> str:
    return (f"{name:>28}: recall {score.recall:.3f} ({score.caught}/{score.crisis}), "
            f"false alarms {score.false_alarm_rate:.3f} ({score.false_alarms}/{score.negatives})")


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", type=Path, default=bench.SET_DIR, help="directory holding the set files")
    parser.add_argument("--write", action="store_true", help=f"train on every group and write {learned_layer.WEIGHTS.name}")
    parser.add_argument("--exemplars", action="store_true", help="also measure the exemplar layer (semantic_layer.py)")
    parser.add_argument("--repeats", type=int, default=1, help="times each message is checked for the timings")
    args = parser.parse_args()
    if args.repeats < 1:
        raise UserError(f"--repeats {args.repeats}: must be at least 1")
    examples = load(args.set)
    embed = learned_layer.Embedder(sentences, keep=True)
    folds = Folds(examples, embed)
    if args.write:
        weights = folds.weights(frozenset())
        weights.save()
        print(f"wrote {learned_layer.WEIGHTS} (threshold {weights.threshold:.3f}, trained on {len(examples)} messages)")
        return
    checks: dict[str, Callable[[str], CrisisCheck]] = {"patterns": lambda group: CrisisCheck()}
    if args.exemplars:
        exemplar_layer = functools.cache(semantic_layer.SemanticLayer(sentences, learned=False))  # read by two checks
        exemplars = CrisisCheck(semantic=exemplar_layer)
        checks["patterns + exemplar layer"] = lambda group: exemplars

    def fold_layer(group: str) -> learned_layer.LearnedLayer:
        return learned_layer.LearnedLayer(sentences, folds.weights(frozenset({group})), embed)

    checks["patterns + learned layer"] = lambda group: CrisisCheck(semantic=fold_layer(group))
    if args.exemplars:  # what chat runs: the exemplar layer asked first, then the learned one
        checks["patterns + both (shipped)"] = lambda group: CrisisCheck(
            semantic=lambda text: exemplar_layer(text) or fold_layer(group)(text))
    checks["learned layer alone"] = lambda group: CrisisCheck(builtin=False, semantic=fold_layer(group))
    totals = {name: bench.Score() for name in checks}
    for group in GROUPS:
        print(f"== held out: {group}")
        for name, make in checks.items():
            score = score_group(examples, group, make(group))
            print(line(name, score))
            total = totals[name]
            total.crisis, total.caught = total.crisis + score.crisis, total.caught + score.caught
            total.negatives, total.false_alarms = total.negatives + score.negatives, total.false_alarms + score.false_alarms
    print("== all held-out groups together")
    for name, total in totals.items():
        print(line(name, total))
    texts = [e.text for e in examples if e.part == "frozen"]
    print(f"== milliseconds per message of the semantic layer (the frozen set's {len(texts)} messages, "
          f"{statistics.mean(len(t) for t in texts):.0f} characters on average), its fastest of {args.repeats}")
    for name, learned in (("exemplars alone (before)", False), ("exemplars + learned (shipped)", True)):
        p50, p95 = bench.milliseconds(semantic_layer.SemanticLayer(sentences, learned=learned), texts, args.repeats)
        print(f"{name:>30}: p50 {p50:.1f}, p95 {p95:.1f}")
    print(f"   shipped threshold {learned_layer.Weights.load().threshold:.3f}")

if __name__ == "__main__":
    run_cli(main)
