"""The study's results: attention checks per annotator, win rates with intervals and tests,
agreement, ratings, and a CSV of every judgment with the run names restored.

Statistics, as printed and documented in docs/humaneval.md:
- Win rate of run A = A wins / (A wins + B wins): ties are left out of the rate and of the test.
  Its 95% interval is Wilson's score interval; the p-value is the two-sided exact binomial test
  of that rate against 0.5 (the sign test). Both from scipy.
- Judgments of one item by several annotators are not independent, so each question is reported
  twice: over judgments, and over items (each item's majority among the annotators; an even split
  is a tie). The item row is the one to put in a paper when items were judged by several people.
- Agreement: Krippendorff's alpha (the `krippendorff` package), nominal level with the values
  A / tie / B, over pair items judged by at least two included annotators.
- Ratings: mean per run with a 95% Student-t interval over the ratings given.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import krippendorff
import numpy as np
from scipy import stats

from empathic_lora.humaneval.storage import Judgment, Store
from empathic_lora.humaneval.study import Side, Study

DEFAULT_MIN_PASS_RATE = 0.75
DEFAULT_MIN_SECONDS = 3.0  # faster than reading a short conversation and two replies
CHECK_NAMES = ("real reply", "broken reply")  # what a and b are in an attention check


@dataclass(frozen=True)
class Annotator:
    name: str
    judged: int
    checks: int
    passed: int
    fast: int
    included: bool

    @property
    def pass_rate(self) -> float | None:
        return self.passed / self.checks if self.checks else None


@dataclass(frozen=True)
class Preference:
    """A wins / ties / B wins on one question, with the win rate of A among decided judgments."""

    wins: int
    ties: int
    losses: int

    @property
    def decided(self) -> int:
        return self.wins + self.losses

    @property
    def win_rate(self) -> float | None:
        return self.wins / self.decided if self.decided else None

    @property
    def interval(self) -> tuple[float, float] | None:
        if not self.decided:
            return None
        ci = stats.binomtest(self.wins, self.decided).proportion_ci(0.95, method="wilson")
        return float(ci.low), float(ci.high)

    @property
    def p_value(self) -> float | None:
        return float(stats.binomtest(self.wins, self.decided, 0.5).pvalue) if self.decided else None


@dataclass(frozen=True)
class Rating:
    n: int
    mean: float | None
    interval: tuple[float, float] | None


@dataclass(frozen=True)
class Report:
    study: Study
    judgments: list[Judgment]
    annotators: list[Annotator]
    min_pass_rate: float | None  # None: nobody excluded
    min_seconds: float
    by_judgment: list[Preference]  # one per question
    by_item: list[Preference]
    agreement: list[float | None]  # Krippendorff's alpha per question; None when undefined
    agreement_items: int
    ratings: dict[Side, Rating]


def check_passed(judgment: Judgment, questions: int) -> bool:
    """An attention check is passed when the real reply wins every question."""
    return all(judgment.winner(q) == "a" for q in range(questions))


def _preference(winners: Sequence[Side | None]) -> Preference:
    return Preference(winners.count("a"), winners.count(None), winners.count("b"))


def _majority(winners: Sequence[Side | None]) -> Side | None:
    balance = winners.count("a") - winners.count("b")
    return "a" if balance > 0 else "b" if balance < 0 else None


def _alpha(pairs: Sequence[Judgment], annotators: Sequence[str], question: int) -> tuple[float | None, int]:
    by_item: dict[str, dict[str, Side | None]] = defaultdict(dict)
    for judgment in pairs:
        by_item[judgment.item][judgment.annotator] = judgment.winner(question)
    shared = [item for item, votes in by_item.items() if len(votes) >= 2]
    if not shared:
        return None, 0
    code = {"a": 0.0, None: 1.0, "b": 2.0}
    data = np.array(
        [[code[by_item[item][name]] if name in by_item[item] else np.nan for item in shared] for name in annotators]
    )
    # Every vote the same value leaves alpha 0/0: undefined, reported as such.
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = krippendorff.alpha(reliability_data=data, value_domain=[0.0, 1.0, 2.0], level_of_measurement="nominal")
    return (None if math.isnan(alpha) else float(alpha)), len(shared)


def _rating(given: Sequence[int | None]) -> Rating:
    values = [value for value in given if value is not None]
    if not values:
        return Rating(0, None, None)
    mean = float(np.mean(values))
    if len(values) < 2 or len(set(values)) == 1:
        return Rating(len(values), mean, None if len(values) < 2 else (mean, mean))
    ci = stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
    return Rating(len(values), mean, (float(ci.low), float(ci.high)))


def analyse(store: Store, min_pass_rate: float | None = DEFAULT_MIN_PASS_RATE, min_seconds: float = DEFAULT_MIN_SECONDS) -> Report:
    """The report of a study. Annotators whose attention-check pass rate is below `min_pass_rate`
    are left out of every number after the annotator table (`None` keeps everyone)."""
    study = store.study
    questions = len(study.questions)
    judgments = store.judgments()
    per_annotator: dict[str, list[Judgment]] = defaultdict(list)
    for judgment in judgments:
        per_annotator[judgment.annotator].append(judgment)
    annotators = []
    for name, theirs in sorted(per_annotator.items()):
        checks = [j for j in theirs if study.by_id[j.item].kind == "check"]
        passed = sum(check_passed(j, questions) for j in checks)
        rate = passed / len(checks) if checks else None
        included = min_pass_rate is None or rate is None or rate >= min_pass_rate
        fast = sum(j.seconds < min_seconds for j in theirs)
        annotators.append(Annotator(name, len(theirs), len(checks), passed, fast, included))
    kept = {a.name for a in annotators if a.included}
    pairs = [j for j in judgments if j.annotator in kept and study.by_id[j.item].kind == "pair"]
    by_item: dict[str, list[Judgment]] = defaultdict(list)
    for judgment in pairs:
        by_item[judgment.item].append(judgment)
    alphas = [_alpha(pairs, sorted(kept), q) for q in range(questions)]
    return Report(
        study=study, judgments=judgments, annotators=annotators, min_pass_rate=min_pass_rate, min_seconds=min_seconds,
        by_judgment=[_preference([j.winner(q) for j in pairs]) for q in range(questions)],
        by_item=[_preference([_majority([j.winner(q) for j in votes]) for votes in by_item.values()]) for q in range(questions)],
        agreement=[alpha for alpha, _ in alphas], agreement_items=alphas[0][1] if alphas else 0,
        ratings={"a": _rating([j.rating("a") for j in pairs]), "b": _rating([j.rating("b") for j in pairs])},
    )


def _number(value: float | None, form: str = ".3f") -> str:
    return "n/a" if value is None else format(value, form)


def _interval(interval: tuple[float, float] | None, form: str = ".3f") -> str:
    return "n/a" if interval is None else f"[{interval[0]:{form}}, {interval[1]:{form}}]"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def format_report(report: Report) -> str:
    """The report as text for the terminal."""
    study = report.study
    pairs = sum(item.kind == "pair" for item in study.items)
    lines = [
        f"A: {study.names[0]}",
        f"B: {study.names[1]}",
        f"items: {pairs} pairs + {len(study.items) - pairs} attention checks; contexts skipped (in one file only): "
        f"{study.skipped['a']} only in A, {study.skipped['b']} only in B",
        "",
    ]
    threshold = "nobody excluded" if report.min_pass_rate is None else f"excluded below a pass rate of {report.min_pass_rate:.2f}"
    lines.append(f"annotators (a check is passed when the real reply wins every question; {threshold}):")
    rows = [["annotator", "judged", "checks", "passed", "pass rate", f"fast (<{report.min_seconds:g}s)", "status"]]
    for a in report.annotators:
        rows.append([a.name, str(a.judged), str(a.checks), str(a.passed), _number(a.pass_rate, ".2f"), str(a.fast),
                     "included" if a.included else "EXCLUDED"])
    lines += _table(rows) if report.annotators else ["  no judgments yet"]
    lines += ["", "preference for A (win rate = A wins / (A wins + B wins), ties left out; 95% Wilson interval; "
              "two-sided exact binomial (sign) test against 0.5):"]
    rows = [["question", "unit", "A wins", "ties", "B wins", "A win rate", "95% CI", "p"]]
    for question, judged, itemwise in zip(study.questions, report.by_judgment, report.by_item):
        for unit, pref in (("judgments", judged), ("items (majority)", itemwise)):
            rows.append([question if unit == "judgments" else "", unit, str(pref.wins), str(pref.ties), str(pref.losses),
                         _number(pref.win_rate), _interval(pref.interval), _number(pref.p_value, ".4g")])
    lines += _table(rows)
    lines += ["", f"agreement (Krippendorff's alpha, nominal A / tie / B, over {report.agreement_items} pair items "
              "judged by 2 or more included annotators):"]
    lines += _table([[question, "undefined" if alpha is None else f"{alpha:.3f}"]
                     for question, alpha in zip(study.questions, report.agreement)])
    lines += ["", "ratings 1-5 (mean, 95% Student-t interval, number of ratings):"]
    lines += _table([[label, _number(r.mean, ".2f"), _interval(r.interval, ".2f"), f"n={r.n}"]
                     for label, r in (("A", report.ratings["a"]), ("B", report.ratings["b"]))])
    return "\n".join(lines)


def write_csv(report: Report, path: Path) -> int:
    """Every judgment, one row each, with the runs named; returns the number of rows."""
    study = report.study
    status = {a.name: a.included for a in report.annotators}
    questions = len(study.questions)
    header = ["annotator", "annotator_included", "item", "kind", "stage", "emotion", "context",
              "reply_1_run", "reply_1", "reply_2_run", "reply_2"]
    header += [f"q{q + 1}: {text}" for q, text in enumerate(study.questions)]
    header += ["rating_1", "rating_2", "check_passed", "seconds", "fast", "submitted_at", "revisions"]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for j in report.judgments:
            item = study.by_id[j.item]
            names = dict(zip("ab", study.names if item.kind == "pair" else CHECK_NAMES))
            texts = {"a": item.a, "b": item.b}
            winners = [names[w] if (w := j.winner(q)) is not None else "tie" for q in range(questions)]
            writer.writerow([
                j.annotator, status[j.annotator], j.item, item.kind, item.stage, item.emotion, item.context,
                names[j.shown[0]], texts[j.shown[0]], names[j.shown[1]], texts[j.shown[1]], *winners,
                j.ratings[0] or "", j.ratings[1] or "", check_passed(j, questions) if item.kind == "check" else "",
                f"{j.seconds:.1f}", j.seconds < report.min_seconds, j.submitted_at, j.revisions,
            ])
    return len(report.judgments)
