"""The report's numbers against hand computations, exclusion by attention checks, the CSV, and the
database's guarantees (one row per annotator and item, another study refused, concurrent writers)."""

from __future__ import annotations

import csv
import math
import sqlite3
import threading
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_python
from humaneval_samples import two_runs

from empathic_lora.errors import UserError
from empathic_lora.humaneval.report import analyse, format_report, write_csv
from empathic_lora.humaneval.storage import Store
from empathic_lora.humaneval.study import Side, Study, build_study


def shown(study: Study, annotator: str, item: str, side: Side | None) -> str:
    """The answer (as clicked) that prefers `side`, given which side this annotator saw first."""
    return "tie" if side is None else "1" if study.first(annotator, item) == side else "2"


def judge(store: Store, annotator: str, winners: list[Side | None], checks_right: bool, seconds: float = 10.0,
          ratings: tuple[int, int] | None = None) -> None:
    """`winners[i]` on every question of the i-th pair item; checks answered right or wrong."""
    study = store.study
    pairs = [item for item in study.items if item.kind == "pair"]
    for item, side in zip(pairs, winners):
        answers = [shown(study, annotator, item.id, side)] * len(study.questions)
        order = "ab" if study.first(annotator, item.id) == "a" else "ba"
        given = (None, None) if ratings is None else tuple(dict(zip("ab", ratings))[s] for s in order)
        store.save(annotator, item.id, answers, given, seconds)
    for item in (item for item in study.items if item.kind == "check"):
        store.save(annotator, item.id, [shown(study, annotator, item.id, "a" if checks_right else "b")] * len(study.questions),
                   (None, None), seconds)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    a, b = two_runs(tmp_path, n=10)
    return Store.create_or_open(tmp_path / "study.sqlite", build_study(a, b, attention_rate=0.2, seed=3))


VOTES: list[Side | None] = ["a"] * 7 + ["b"] * 2 + [None]


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def test_win_rate_interval_and_sign_test(store: Store) -> None:
    judge(store, "alice", VOTES, checks_right=True, ratings=(4, 2))
    report = analyse(store)
    for pref in report.by_judgment + report.by_item:
        assert (pref.wins, pref.ties, pref.losses) == (7, 1, 2)
        assert pref.win_rate == pytest.approx(7 / 9)
        assert pref.interval == pytest.approx(wilson(7, 9))
        # Two-sided exact binomial test, ties dropped: P(X <= 2) + P(X >= 7) for X ~ Bin(9, 1/2).
        assert pref.p_value == pytest.approx(2 * sum(math.comb(9, k) for k in range(3)) / 2**9)
    assert report.ratings["a"].mean == 4 and report.ratings["b"].mean == 2 and report.ratings["a"].n == 10
    text = format_report(report)
    assert "0.778" in text and "[0.453, 0.937]" in text and "0.1797" in text


def test_failed_attention_checks_exclude_an_annotator_unless_kept(store: Store) -> None:
    judge(store, "alice", VOTES, checks_right=True)
    judge(store, "mallory", ["b"] * 10, checks_right=False, seconds=1.0)
    report = analyse(store)
    status = {a.name: (a.checks, a.passed, a.included, a.fast) for a in report.annotators}
    assert status == {"alice": (2, 2, True, 0), "mallory": (2, 0, False, 12)}
    assert (report.by_judgment[0].wins, report.by_judgment[0].losses) == (7, 2)
    assert "EXCLUDED" in format_report(report)
    everyone = analyse(store, min_pass_rate=None)
    assert (everyone.by_judgment[0].wins, everyone.by_judgment[0].losses) == (7, 12)
    assert (everyone.by_item[0].wins, everyone.by_item[0].ties, everyone.by_item[0].losses) == (0, 7, 3)


def test_agreement_is_krippendorffs_alpha_over_shared_items(store: Store) -> None:
    judge(store, "alice", VOTES, checks_right=True)
    judge(store, "carol", VOTES, checks_right=True)
    report = analyse(store)
    assert report.agreement == [1.0, 1.0, 1.0] and report.agreement_items == 10
    judge(store, "dave", VOTES[::-1], checks_right=True)
    assert analyse(store).agreement[0] < 0.5
    # Two annotators who always agree on one value: alpha is 0/0, reported as undefined, not as a number.
    a_only = analyse_only(store, ["a"] * 10)
    assert a_only.agreement[0] is None and "undefined" in format_report(a_only)


def analyse_only(store: Store, votes: list[Side | None]):
    fresh = Store.create_or_open(store.path.with_name("fresh.sqlite"), store.study)
    judge(fresh, "x", votes, checks_right=True)
    judge(fresh, "y", votes, checks_right=True)
    return analyse(fresh)


def test_csv_has_every_judgment_with_run_names(store: Store, tmp_path: Path) -> None:
    judge(store, "alice", VOTES, checks_right=True)
    judge(store, "mallory", ["b"] * 10, checks_right=False)
    report = analyse(store)
    assert write_csv(report, tmp_path / "out.csv") == 24
    with open(tmp_path / "out.csv", newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    name_a, name_b = store.study.names
    alice = [r for r in table if r["annotator"] == "alice" and r["kind"] == "pair"]
    empathetic = "q1: Which reply is more empathetic?"
    assert sorted(r[empathetic] for r in alice) == sorted([name_a] * 7 + [name_b] * 2 + ["tie"])
    for r in alice:
        assert {r["reply_1_run"], r["reply_2_run"]} == {name_a, name_b}
        assert r["reply_1"].startswith("A says" if r["reply_1_run"] == name_a else "B says")
    assert {r["annotator_included"] for r in table if r["annotator"] == "mallory"} == {"False"}
    assert {r["check_passed"] for r in table if r["kind"] == "check"} == {"True", "False"}


def test_a_resubmission_replaces_the_row_and_counts(store: Store) -> None:
    item = store.study.items[0].id
    assert store.save("alice", item, ["1", "1", "1"], (None, None), 5.0) is False
    assert store.save("alice", item, ["2", "tie", "1"], (3, None), 6.0) is True
    (only,) = store.judgments()
    assert (only.answers, only.ratings, only.revisions) == (("2", "tie", "1"), (3, None), 1)


def test_another_study_or_a_foreign_file_is_refused(store: Store, tmp_path: Path) -> None:
    a, b = two_runs(tmp_path / "other", n=4)
    with pytest.raises(UserError, match="holds another study"):
        Store.create_or_open(store.path, build_study(a, b))
    Store.create_or_open(store.path, store.study)  # the same study reopens
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE users (name TEXT)")
    with pytest.raises(UserError, match="not a human-evaluation database"):
        Store.create_or_open(foreign, store.study)
    (tmp_path / "text.sqlite").write_text("hello, I am not a database" * 10)
    with pytest.raises(UserError, match="not a usable SQLite database"):
        Store.open_existing(tmp_path / "text.sqlite")
    with pytest.raises(UserError, match="no such database"):
        Store.open_existing(tmp_path / "missing.sqlite")


def test_concurrent_annotators_do_not_collide(store: Store) -> None:
    names = [f"annotator{i}" for i in range(6)]
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            own = Store(store.path, store.study)  # as each request does: its own connection
            for item in store.study.items:
                own.save(name, item.id, ["1", "2", "tie"], (5, 1), 4.0)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(store.judgments()) == len(names) * len(store.study.items)


def test_report_command_prints_and_refuses_to_overwrite_a_csv(store: Store, tmp_path: Path) -> None:
    judge(store, "alice", VOTES, checks_right=True)
    out = tmp_path / "judgments.csv"
    result = run_python("-m", "empathic_lora.humaneval", "report", "--db", str(store.path), "--csv", str(out))
    assert result.returncode == 0, result.stderr
    assert "Wilson" in result.stdout and "Krippendorff" in result.stdout and f"wrote 12 judgments to {out}" in result.stdout
    out.write_text("mine")
    result = run_python("-m", "empathic_lora.humaneval", "report", "--db", str(store.path), "--csv", str(out))
    assert_one_line_error(result, f"--csv {out}", "--force")
    assert out.read_text() == "mine"
    assert_one_line_error(run_python("-m", "empathic_lora.humaneval", "report", "--db", str(tmp_path / "nope.sqlite")),
                          "nope.sqlite")
