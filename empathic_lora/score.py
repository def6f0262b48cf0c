"""`python -m empathic_lora.score`, the command people type.

- `PATH [PATH ...]`: one comparison table of replies and runs (`evaluate/compare_runs.py`);
- `--probe --checkpoint RUN`: the repetition probe (`evaluate/repetition_probe.py`) on a trained
  model, loaded as chat loads it: the repetition rate and the repeated replies, and with `--out`
  every reply as JSON Lines.
"""

from __future__ import annotations

import sys
from pathlib import Path

from empathic_lora import jsonl
from empathic_lora.conversation import Formatter
from empathic_lora.errors import ArgumentParser, run_cli
from empathic_lora.evaluate import compare_runs, repetition_probe
from empathic_lora.lm.decoding import GenerationSettings, printable
from empathic_lora.session.flags import add_model_flags, load_session_model, positive_int

PROBE = "--probe"


def probe_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m empathic_lora.score", description=repetition_probe.__doc__.split("\n\n")[0])
    p.add_argument(PROBE, action="store_true", required=True,
                   help=f"run the repetition probe ({len(repetition_probe.PROBES)} scripted multi-turn conversations)")
    add_model_flags(p)
    p.add_argument("--max_new_tokens", type=positive_int, default=GenerationSettings.max_new_tokens,
                   help="longest reply (default %(default)s, chat's); decoding is otherwise chat's default, greedy")
    p.add_argument("--out", type=Path, help="also write every reply as JSON Lines (refused if it exists, unless --force)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    return p


def probe(argv: list[str]) -> None:
    args = probe_parser().parse_args(argv)
    if args.out is not None:
        jsonl.check_writable(args.out, args.force)  # before the model loads and generates
    loaded, history = load_session_model(args)
    # Chat's decoding (greedy): the replies a user of chat would see.
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    replies = repetition_probe.roll_out(loaded.model, Formatter(loaded.tokenizer, history), settings)
    for line in repetition_probe.report(replies):
        print(printable(line))
    if args.out is not None:
        jsonl.write(args.out, repetition_probe.records(replies), force=args.force)
        print(f"wrote {sum(map(len, replies))} replies to {args.out}", file=sys.stderr)


def main(argv: list[str]) -> None:
    if PROBE in argv:
        probe(argv)
    else:
        compare_runs.main(argv)


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
