"""The study database: SQLite (standard library), the study itself plus one row per judgment.

Durability: every write is committed, in WAL mode with `synchronous=FULL`, before the request
that made it is answered, so a judgment the browser was told is saved survives the server being
killed (SIGKILL) at any moment, and a power cut too. Each call opens its own connection: requests
run on several threads, and SQLite serialises the writers (waiting up to `BUSY_TIMEOUT_S`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from empathic_lora.errors import UserError
from empathic_lora.humaneval.study import Side, Study

Answer = str  # "1", "2" (the reply in that position) or "tie"
BUSY_TIMEOUT_S = 30.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS study (fingerprint TEXT NOT NULL, definition TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS judgments (
    annotator TEXT NOT NULL,
    item TEXT NOT NULL,
    first TEXT NOT NULL CHECK (first IN ('a', 'b')),    -- the run shown as reply 1
    answers TEXT NOT NULL,                               -- JSON list, one per question, as shown
    rating_1 INTEGER CHECK (rating_1 BETWEEN 1 AND 5),   -- of reply 1 as shown, optional
    rating_2 INTEGER CHECK (rating_2 BETWEEN 1 AND 5),
    seconds REAL NOT NULL,                               -- from showing the item to submitting
    submitted_at TEXT NOT NULL,                          -- UTC, ISO 8601, of the latest submission
    revisions INTEGER NOT NULL DEFAULT 0,                -- how many earlier submissions this replaced
    PRIMARY KEY (annotator, item)
);
"""


@dataclass(frozen=True)
class Judgment:
    annotator: str
    item: str
    first: Side
    answers: tuple[Answer, ...]
    ratings: tuple[int | None, int | None]  # of reply 1 and reply 2 as shown
    seconds: float
    submitted_at: str
    revisions: int

    @property
    def shown(self) -> tuple[Side, Side]:
        """The runs shown as reply 1 and reply 2."""
        return ("a", "b") if self.first == "a" else ("b", "a")

    def winner(self, question: int) -> Side | None:
        """The run this judgment prefers on a question (None: a tie)."""
        answer = self.answers[question]
        return None if answer == "tie" else self.shown[int(answer) - 1]

    def rating(self, side: Side) -> int | None:
        return self.ratings[self.shown.index(side)]


@contextmanager
def _connect(path: Path, readonly: bool = False) -> Iterator[sqlite3.Connection]:
    uri = f"{path.resolve().as_uri()}?mode={'ro' if readonly else 'rwc'}"
    with closing(sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)) as connection:
        try:
            connection.execute("PRAGMA synchronous=FULL")  # per connection: the WAL is fsynced at each commit
        except sqlite3.DatabaseError as error:
            raise UserError(f"--db {path}: not a usable SQLite database ({error})") from None
        yield connection


def _stored_study(connection: sqlite3.Connection, path: Path) -> tuple[str, Study] | None:
    try:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return None
        if tables != {"study", "judgments"}:
            raise UserError(f"--db {path}: not a human-evaluation database (it has the tables {sorted(tables)})")
        rows = connection.execute("SELECT fingerprint, definition FROM study").fetchall()
        if len(rows) != 1:
            raise UserError(f"--db {path}: its study table holds {len(rows)} studies, not one")
        return rows[0][0], Study.from_json(json.loads(rows[0][1]))
    except sqlite3.DatabaseError as error:
        raise UserError(f"--db {path}: not a usable SQLite database ({error})") from None
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"--db {path}: its study cannot be read ({error})") from None


class Store:
    """The judgments of one study in one database file."""

    def __init__(self, path: Path, study: Study):
        self.path = path
        self.study = study

    @classmethod
    def create_or_open(cls, path: Path, study: Study) -> Store:
        """The database for `study`: created when new, reopened when it holds the same study, refused
        when it holds another (other samples, questions or settings)."""
        if path.is_dir():
            raise UserError(f"--db {path}: is a directory")
        if not path.parent.is_dir():
            raise UserError(f"--db {path}: its directory does not exist")
        with _connect(path) as connection:
            stored = _stored_study(connection, path)
            if stored is None:
                connection.execute("PRAGMA journal_mode=WAL")  # stays set in the file
                connection.executescript(SCHEMA)
                connection.execute("BEGIN IMMEDIATE")
                # Another server may have started on the same new file meanwhile: first one wins.
                if connection.execute("SELECT count(*) FROM study").fetchone()[0] == 0:
                    connection.execute("INSERT INTO study VALUES (?, ?)", (study.fingerprint, json.dumps(study.to_json())))
                connection.execute("COMMIT")
                stored = _stored_study(connection, path)
            assert stored is not None  # written just above
            if stored[0] != study.fingerprint:
                theirs = stored[1]
                raise UserError(
                    f"--db {path} holds another study ({theirs.names[0]} vs {theirs.names[1]}, {len(theirs.items)} items, "
                    f"questions {list(theirs.questions)}): give these samples a new --db"
                )
        return cls(path, stored[1])  # with the run names it was started with

    @classmethod
    def open_existing(cls, path: Path) -> Store:
        """A database to report on, opened read-only: reporting never changes it."""
        if not path.is_file():
            raise UserError(f"--db {path}: no such database")
        with _connect(path, readonly=True) as connection:
            stored = _stored_study(connection, path)
        if stored is None:
            raise UserError(f"--db {path}: an empty database, not a human-evaluation study")
        return cls(path, stored[1])

    def save(
        self, annotator: str, item: str, answers: Sequence[Answer], ratings: tuple[int | None, int | None], seconds: float
    ) -> bool:
        """Store (or replace) the annotator's judgment of an item; True when it replaced one.
        Committed and fsynced before it returns."""
        first = self.study.first(annotator, item)
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        with _connect(self.path) as connection:
            connection.execute("BEGIN IMMEDIATE")
            replaced = connection.execute(
                "SELECT 1 FROM judgments WHERE annotator = ? AND item = ?", (annotator, item)
            ).fetchone() is not None
            connection.execute(
                """INSERT INTO judgments (annotator, item, first, answers, rating_1, rating_2, seconds, submitted_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (annotator, item) DO UPDATE SET
                     first = excluded.first, answers = excluded.answers, rating_1 = excluded.rating_1,
                     rating_2 = excluded.rating_2, seconds = excluded.seconds,
                     submitted_at = excluded.submitted_at, revisions = revisions + 1""",
                (annotator, item, first, json.dumps(list(answers)), ratings[0], ratings[1], seconds, now),
            )
            connection.execute("COMMIT")
        return replaced

    def judgments(self, annotator: str | None = None) -> list[Judgment]:
        """Every judgment (or one annotator's), oldest submission first."""
        query = "SELECT annotator, item, first, answers, rating_1, rating_2, seconds, submitted_at, revisions FROM judgments"
        args: tuple[str, ...] = ()
        if annotator is not None:
            query, args = query + " WHERE annotator = ?", (annotator,)
        with _connect(self.path, readonly=True) as connection:
            rows = connection.execute(query + " ORDER BY submitted_at, annotator, item", args).fetchall()
        return [
            Judgment(name, item, first, tuple(json.loads(answers)), (r1, r2), seconds, at, revisions)
            for name, item, first, answers, r1, r2, seconds, at, revisions in rows
        ]
