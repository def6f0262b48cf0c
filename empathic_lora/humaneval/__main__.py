"""`python -m empathic_lora.humaneval serve|report|export-pairs`: judge two runs' replies in the
browser, report the results (see docs/humaneval.md), or export the judgments as preference pairs."""

from __future__ import annotations

import sys
from pathlib import Path

from empathic_lora.data import preference_pairs
from empathic_lora.errors import ArgumentParser, UserError, run_cli
from empathic_lora.humaneval import preference_export, report, study
from empathic_lora.humaneval.storage import Store


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m empathic_lora.humaneval", description=__doc__)
    commands = p.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the annotation page for two runs' samples.jsonl")
    serve.add_argument("--a", type=Path, required=True, help="run A's samples.jsonl (written by `train.py test`), its run directory or the root above it")
    serve.add_argument("--b", type=Path, required=True, help="run B's samples.jsonl, its run directory or the root above it")
    serve.add_argument("--db", type=Path, required=True, help="SQLite file of the study: created, or reopened to continue")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8001, help="port (default 8001; 0: a free one)")
    serve.add_argument("--question", action="append", dest="questions", metavar="TEXT",
                       help="a question to answer with reply 1 / 2 / tie; repeat for several (default: "
                            f"{' / '.join(study.DEFAULT_QUESTIONS)})")
    serve.add_argument("--attention-rate", type=float, default=0.1,
                       help="share of items that are attention checks, a real reply against a broken one (default 0.1)")
    serve.add_argument("--seed", type=int, default=0, help="seeds the checks, each annotator's order and sides")
    rep = commands.add_parser("report", help="print win rates, intervals, tests, agreement and attention checks")
    rep.add_argument("--db", type=Path, required=True, help="the study's SQLite file")
    rep.add_argument("--csv", type=Path, help="also write every judgment, with the run names, to this CSV file")
    rep.add_argument("--force", action="store_true", help="replace an existing --csv file")
    rep.add_argument("--min-pass-rate", type=float, default=report.DEFAULT_MIN_PASS_RATE,
                     help="exclude annotators whose attention-check pass rate is below this (default %(default)s)")
    rep.add_argument("--keep-all", action="store_true", help="exclude nobody, whatever their pass rate")
    rep.add_argument("--min-seconds", type=float, default=report.DEFAULT_MIN_SECONDS,
                     help="flag judgments given faster than this (default %(default)s s)")
    export = commands.add_parser("export-pairs", help="write the judgments as preference pairs (TRL's JSONL format) for --data.pairs")
    export.add_argument("--db", type=Path, required=True, help="the study's SQLite file")
    export.add_argument("--out", type=Path, required=True, help="the JSONL file to write (refused if it exists, unless --force)")
    export.add_argument("--force", action="store_true", help="replace an existing --out file")
    export.add_argument("--question", type=int, default=1, help="which question's answers decide chosen and rejected (1-based; default 1)")
    export.add_argument("--min-pass-rate", type=float, default=report.DEFAULT_MIN_PASS_RATE,
                        help="exclude annotators the report excludes: attention-check pass rate below this (default %(default)s)")
    export.add_argument("--keep-all", action="store_true", help="exclude nobody, whatever their pass rate")
    return p


def export_pairs(args) -> None:
    if not 0 <= args.min_pass_rate <= 1:
        raise UserError(f"--min-pass-rate {args.min_pass_rate}: must be between 0 and 1")
    pairs, ties = preference_export.study_pairs(Store.open_existing(args.db), args.question - 1,
                                                None if args.keep_all else args.min_pass_rate)
    if not pairs:
        raise UserError(f"--db {args.db}: no judgment prefers one reply on question {args.question} ({ties} ties); nothing to write")
    preference_pairs.write(args.out, pairs, force=args.force)
    print(f"wrote {len(pairs)} pairs to {args.out} ({ties} ties dropped)", file=sys.stderr)


def serve(args) -> None:
    built = study.build_study(args.a, args.b, tuple(args.questions or study.DEFAULT_QUESTIONS), args.attention_rate, args.seed)
    store = Store.create_or_open(args.db, built)
    # Imported once the files are known to be good: a mistake in them is reported without the wait.
    from empathic_lora import web
    from empathic_lora.humaneval.app import create_app

    sock = web.bind(args.host, args.port)
    pairs = sum(item.kind == "pair" for item in built.items)
    print(f"study: {pairs} paired contexts ({built.skipped['a']} only in --a, {built.skipped['b']} only in --b, skipped), "
          f"{len(built.items) - pairs} attention checks; judgments go to {args.db}", file=sys.stderr)
    print("annotators open the page and enter a name, or get a link of their own: URL/?annotator=NAME", file=sys.stderr)
    web.serve(create_app(store), sock)


def write_report(args) -> None:
    if not 0 <= args.min_pass_rate <= 1:
        raise UserError(f"--min-pass-rate {args.min_pass_rate}: must be between 0 and 1")
    if args.csv is not None and args.csv.exists() and not args.force:
        raise UserError(f"--csv {args.csv}: exists; pass --force to replace it")
    if args.csv is not None and not args.csv.parent.is_dir():
        raise UserError(f"--csv {args.csv}: its directory does not exist")
    results = report.analyse(Store.open_existing(args.db), None if args.keep_all else args.min_pass_rate, args.min_seconds)
    print(report.format_report(results))
    if args.csv is not None:
        rows = report.write_csv(results, args.csv)
        print(f"\nwrote {rows} judgments to {args.csv}")


def main() -> None:
    args = parser().parse_args()
    {"serve": serve, "report": write_report, "export-pairs": export_pairs}[args.command](args)


if __name__ == "__main__":
    run_cli(main)
