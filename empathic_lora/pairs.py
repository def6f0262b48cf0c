"""`python -m empathic_lora.pairs data|self`: preference pairs (TRL's JSONL format, for
`--data.pairs`) from the data itself or from a model's own replies. The third source, people's
judgments, is `python -m empathic_lora.humaneval export-pairs`.

- `data` (EmPO, Sotolar et al. 2024): chosen = the reference listener reply, rejected = a
  listener reply from a conversation of the opposite valence (`data/preference_pairs.py`).
- `self` (SPIN, Chen et al. 2024): chosen = the reference, rejected = the checkpoint's own greedy
  reply to the same context, generated in length-sorted batches by evaluation's own code
  (`evaluate/reply_scoring.generate`). A reply equal to the reference makes no pair.
"""

from __future__ import annotations

import sys
from pathlib import Path

from empathic_lora.data import preference_pairs
from empathic_lora.data.datamodule import EmpatheticDialoguesDataModule, Example
from empathic_lora.errors import ArgumentParser, UserError, run_cli
from empathic_lora.lm.decoding import GenerationSettings

SPLITS = ("train", "val", "test")


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m empathic_lora.pairs", description=__doc__)
    commands = p.add_subparsers(dest="command", required=True)
    for name, help_text in (("data", "EmPO-style pairs: rejected = a reply from a conversation of the opposite valence"),
                            ("self", "SPIN-style pairs: rejected = a checkpoint's own greedy reply")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--data_dir", default="builtin:sample",
                             help="official CSVs of EmpatheticDialogues, or builtin:sample (default)")
        command.add_argument("--split", choices=SPLITS, default="train", help="which split's listener turns (default train)")
        command.add_argument("--max_examples", type=int, default=None, help="only the first N listener turns")
        command.add_argument("--out", type=Path, required=True, help="the JSONL file to write (refused if it exists, unless --force)")
        command.add_argument("--force", action="store_true", help="replace an existing --out file")
        if name == "data":
            command.add_argument("--seed", type=int, default=0, help="seeds the choice of rejected replies (default 0)")
        else:
            command.add_argument("--checkpoint", required=True, help="a checkpoint, run directory or export (as chat's --checkpoint)")
            command.add_argument("--batch_size", type=int, default=16, help="contexts generated at once (default 16)")
            command.add_argument("--max_new_tokens", type=int, default=GenerationSettings.max_new_tokens,
                                 help="longest reply (default %(default)s, evaluation's)")
            command.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to generate (default auto)")
    return p


def examples(args) -> list[Example]:
    if args.max_examples is not None and args.max_examples < 1:
        raise UserError(f"--max_examples {args.max_examples}: must be at least 1")
    data = EmpatheticDialoguesDataModule(args.data_dir, max_examples=args.max_examples)
    return data.examples(args.split)


def self_pairs(args) -> list[preference_pairs.Pair]:
    # Imported here: loading a model pulls in torch and transformers, which `data` does not need.
    from empathic_lora.conversation import Formatter
    from empathic_lora.evaluate import reply_scoring
    from empathic_lora.session import trained_model

    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise UserError("--batch_size and --max_new_tokens must be at least 1")
    chosen = examples(args)
    trained = trained_model.load(args.checkpoint, device=args.device)
    formatter = Formatter(trained.tokenizer, trained.default_history_turns())
    replies = reply_scoring.generate(trained.model, formatter, chosen, GenerationSettings(max_new_tokens=args.max_new_tokens),
                                     args.batch_size)
    return [preference_pairs.Pair(tuple(e.context), e.target, reply)
            for e, reply in zip(chosen, replies) if reply.strip() and reply.strip() != e.target.strip()]


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.command == "data":
        pairs = preference_pairs.opposite_emotion_pairs(examples(args), seed=args.seed)
    else:
        pairs = self_pairs(args)
    if not pairs:
        raise UserError(f"no pairs from {args.data_dir} {args.split}: nothing to write to {args.out}")
    preference_pairs.write(args.out, pairs, force=args.force)
    print(f"wrote {len(pairs)} pairs to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
