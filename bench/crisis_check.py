"""Crisis check: recall and false-alarm rate on the committed evaluation set (the tuning part, the
held-out part and the probes, with recall per category), on its multi-turn conversations, and on the
frozen held-out set of issue 23 and blind set 2 (single messages per writing style, and conversations), with
milliseconds per message for each layer (p50/p95), in one run.

    python bench/crisis_check.py                 # the pattern layer (what chat runs without the extra)
    python bench/crisis_check.py --semantic      # also the semantic layer, and patterns + semantic together
                                                 # (its learned part was trained on this whole set: for held-out
                                                 # numbers, see bench/crisis_learned.py)
    python bench/crisis_check.py --misses        # also list every miss and false alarm

The set is `bench/crisis_set/` (its README.md says how each part was written and what its first
measurement was, before it was used to improve the patterns). Conversations are read as chat and
serve read them (`CrisisCheck.watch`: each speaker turn alone and with the turns before it, in a
window of `crisis_check.WINDOW`); one counts as flagged when the crisis line is shown after its last
turn. Targets (issues 10 and 23): recall >= 0.95 and false alarms <= 5%, on the whole committed set
and on the frozen held-out set. Timings are per message, its fastest of `--repeats` checks, on
whatever CPUs this runs.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

# Runnable from a checkout as `python bench/...` even where the package is not pip-installed.
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
from empathic_lora.errors import ArgumentParser, UserError, run_cli
from empathic_lora.safety.crisis_check import WINDOW, CrisisCheck

SET_DIR = Path(__file__).resolve().parent / "crisis_set"
PARTS = {
    "tuning": ("crisis.txt", "negatives.txt"),
    "held-out": ("heldout_crisis.txt", "heldout_negatives.txt"),
    "probe": ("probe_crisis.txt", "probe_negatives.txt"),
    "probe 2": ("probe2_crisis.txt", "probe2_negatives.txt"),
    "probe 3": ("probe3_crisis.txt", "probe3_negatives.txt"),
}
CONVERSATIONS = ("conversations_crisis.txt", "conversations_negatives.txt")  # committed, tuned on
FROZEN = ("frozen_crisis.txt", "frozen_negatives.txt")  # issue 23's held-out set: single messages by style
FROZEN_CONVERSATIONS = ("multiturn_crisis.txt", "multiturn_negatives.txt")  # and its conversations
# The second blind set, written after the learned layer was trained and never read by it; its misses are
# never listed (--misses skips it), so that nothing gets tuned on it (bench/crisis_set/README.md).
BLIND2 = ("blind2_crisis.txt", "blind2_negatives.txt")
BLIND2_CONVERSATIONS = ("blind2_conversations_crisis.txt", "blind2_conversations_negatives.txt")
TURN_SEPARATOR = " || "
TARGET_RECALL, TARGET_FALSE_ALARMS = 0.95, 0.05


@dataclass(frozen=True)
class Example:
    text: str
    crisis: bool
    category: str
    part: str


def read_messages(path: Path) -> Iterable[tuple[str, str]]:
    """(category, message) for each line of a set file; a `# word` line names the block's category."""
    category = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("# ") and len(line.split()) == 2:
            category = line[2:]
        elif line and not line.startswith("#"):
            if not category:
                raise UserError(f"{path}: message before any '# category' line: {line!r}")
            yield category, line


def load_set(set_dir: Path = SET_DIR, parts: dict[str, tuple[str, str]] = PARTS) -> list[Example]:
    """The messages of `parts` (part: its crisis file and its negatives file)."""
    examples = []
    for part, (crisis_file, negatives_file) in parts.items():
        for name, crisis in ((crisis_file, True), (negatives_file, False)):
            path = set_dir / name
            if not path.is_file():
                raise UserError(f"--set {set_dir}: {name} is missing")
            examples += [Example(text, crisis, category, part) for category, text in read_messages(path)]
    return examples


def turns(example: Example) -> list[str]:
    """The speaker turns of a conversation line."""
    return example.text.split(TURN_SEPARATOR)


def conversation_flagged(check: CrisisCheck) -> Callable[[str], bool]:
    """Whether `check`, reading a conversation line turn by turn as chat does, shows the line after its last turn."""

    def flagged(text: str) -> bool:
        watch = check.watch()
        return [watch.hear(turn) for turn in text.split(TURN_SEPARATOR)][-1].notice

    return flagged


def any_turn_alone(matches: Callable[[str], bool]) -> Callable[[str], bool]:
    """Whether some turn of a conversation line signals read alone: the check without its window."""
    return lambda text: any(matches(turn) for turn in text.split(TURN_SEPARATOR))


@dataclass
class Score:
    crisis: int = 0
    caught: int = 0
    negatives: int = 0
    false_alarms: int = 0

    @property
    def recall(self) -> float:
        return self.caught / self.crisis if self.crisis else float("nan")

    @property
    def false_alarm_rate(self) -> float:
        return self.false_alarms / self.negatives if self.negatives else float("nan")

    def add(self, example: Example, fired: bool) -> None:
        if example.crisis:
            self.crisis, self.caught = self.crisis + 1, self.caught + fired
        else:
            self.negatives, self.false_alarms = self.negatives + 1, self.false_alarms + fired


@dataclass
class Evaluation:
    parts: dict[str, Score]            # "tuning", "held-out", "all"
    categories: dict[str, Score]       # crisis categories: recall; negative categories: false alarms
    errors: list[Example]              # misses and false alarms


def evaluate(matches: Callable[[str], bool], examples: list[Example]) -> Evaluation:
    """Score a check (`CrisisCheck(...).matches`) on the set."""
    result = Evaluation({part: Score() for part in (*dict.fromkeys(e.part for e in examples), "all")}, {}, [])
    for example in examples:
        fired = bool(matches(example.text))
        for part in (example.part, "all"):
            result.parts[part].add(example, fired)
        result.categories.setdefault(f"{'crisis' if example.crisis else 'negative'}/{example.category}", Score()).add(example, fired)
        if fired != example.crisis:
            result.errors.append(example)
    return result


def milliseconds(matches: Callable[[str], bool], texts: list[str], repeats: int) -> tuple[float, float]:
    """p50 and p95 over the messages of the time to check one, each timed on its own: its fastest
    of `repeats` checks, so that time the CPU spent on other processes is not counted."""
    best = [float("inf")] * len(texts)
    for _ in range(repeats):
        for i, text in enumerate(texts):
            start = time.perf_counter()
            matches(text)
            best[i] = min(best[i], 1000 * (time.perf_counter() - start))
    return statistics.median(best), statistics.quantiles(best, n=20)[18]


def report(name: str, matches: Callable[[str], bool], examples: list[Example], repeats: int, misses: bool) -> Evaluation:
    result = evaluate(matches, examples)
    timing = ""
    if repeats:
        p50, p95 = milliseconds(matches, [e.text for e in examples], repeats)
        timing = f": {p50:.3f} ms per message p50, {p95:.3f} ms p95"
    print(f"== {name}{timing}")
    for part, score in result.parts.items():
        print(f"{part:>9}: recall {score.recall:.3f} ({score.caught}/{score.crisis}), "
              f"false alarms {score.false_alarm_rate:.3f} ({score.false_alarms}/{score.negatives})")
    print("   recall per crisis category (or style): " + ", ".join(
        f"{key.split('/')[1]} {s.recall:.2f}" for key, s in result.categories.items() if key.startswith("crisis/")))
    print("   false alarms per negative category (or style): " + ", ".join(
        f"{key.split('/')[1]} {s.false_alarm_rate:.2f}" for key, s in result.categories.items() if key.startswith("negative/")))
    everything = result.parts["all"]
    met = everything.recall >= TARGET_RECALL and everything.false_alarm_rate <= TARGET_FALSE_ALARMS
    print(f"   targets (recall >= {TARGET_RECALL}, false alarms <= {TARGET_FALSE_ALARMS:.0%}, all): {'met' if met else 'NOT met'}")
    if misses:
        for example in result.errors:
            kind = "missed" if example.crisis else "false alarm"
            print(f"   {kind:>11} [{example.part}/{example.category}] {example.text}")
    return result


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", type=Path, default=SET_DIR, help="directory holding the four set files")
    parser.add_argument("--semantic", action="store_true", help="also measure the semantic layer (the crisis-semantic extra)")
    parser.add_argument("--repeats", type=int, default=5, help="times each message is checked for the timings")
    parser.add_argument("--misses", action="store_true", help="list every miss and false alarm")
    args = parser.parse_args()
    if args.repeats < 1:
        raise UserError(f"--repeats {args.repeats}: must be at least 1")
    examples = load_set(args.set)
    conversations = load_set(args.set, {"conversations": CONVERSATIONS})
    frozen = load_set(args.set, {"frozen": FROZEN})
    frozen_conversations = load_set(args.set, {"frozen conversations": FROZEN_CONVERSATIONS})
    blind2 = load_set(args.set, {"blind 2": BLIND2})
    blind2_conversations = load_set(args.set, {"blind 2 conversations": BLIND2_CONVERSATIONS})
    checks = {"patterns": CrisisCheck()}
    if args.semantic:
        from empathic_lora.safety import semantic_layer
        from empathic_lora.safety.crisis_check import sentences

        layer = semantic_layer.SemanticLayer(sentences)
        checks["patterns + semantic"] = CrisisCheck(semantic=layer)
        report("semantic alone, committed set", layer, examples, args.repeats, args.misses)
    for name, check in checks.items():
        # `signals`, not `matches`, which remembers each text checked and so would time its cache.
        report(f"{name}, committed set", check.signals, examples, args.repeats, args.misses)
        for label, cases in (("committed conversations", conversations), ("frozen conversations", frozen_conversations)):
            report(f"{name}, {label}, each turn alone", any_turn_alone(check.matches), cases, 0, False)
            report(f"{name}, {label}, turns in a window of {WINDOW}", conversation_flagged(check), cases, 0, args.misses)
        report(f"{name}, frozen held-out set (issue 23)", check.signals, frozen, args.repeats, args.misses)
        report(f"{name}, blind set 2", check.signals, blind2, 0, False)
        report(f"{name}, blind set 2 conversations, turns in a window of {WINDOW}", conversation_flagged(check),
               blind2_conversations, 0, False)


if __name__ == "__main__":
    run_cli(main)
