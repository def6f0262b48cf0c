"""Replies of a trained checkpoint to ten varied one-line messages, zero-shot (adapter switched off)
beside fine-tuned, decoded exactly as `chat.py` decodes them (greedy, or `--num_beams N` as chat's flag;
its default 64-token limit).

    python bench/quickstart_replies.py --checkpoint runs/quickstart

Prints a Markdown table (the one in docs/results.md); a reply that filled the token limit instead
of ending on its own is marked. The judgement "fitting and empathetic" is a person's, not the script's.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

# Runnable from a checkout as `python bench/...` even where the package is not pip-installed.
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
from empathic_lora.conversation import Formatter, Turn
from empathic_lora.errors import ArgumentParser, UserError, run_cli
from empathic_lora.lm.decoding import GenerationSettings, generate_replies, printable
from empathic_lora.session import trained_model

# Written for this project: work, loss, joy, hurt, worry, anger, loneliness, pride, guilt, fear.
MESSAGES = [
    "I feel overwhelmed with work",
    "My dog died this morning.",
    "I finally got the job I interviewed for last week!",
    "My best friend forgot my birthday.",
    "I have a big exam tomorrow and I can't stop worrying.",
    "My neighbor plays loud music every night at 2 am.",
    "I just moved to a new city and I don't know anyone here.",
    "My daughter took her first steps today!",
    "I broke my mom's favorite vase and I haven't told her yet.",
    "I have to fly next week and I am scared of flying.",
]


def _cell(reply: str, tokens: int, limit: int) -> str:
    text = printable(reply).replace("|", "\\|") or "*(nothing)*"
    # Re-encoding the cleaned reply loses the line breaks it held, a few tokens: hence the slack.
    return f"{text} … *(to the {limit}-token limit)*" if tokens >= limit - 8 else text


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="what chat.py --checkpoint takes")
    parser.add_argument("--no-zero-shot", action="store_true", help="only the fine-tuned replies (the slow part is the base's)")
    parser.add_argument("--num_beams", type=int, default=1, help="decode as chat.py --num_beams does (1: greedy)")
    args = parser.parse_args()
    try:
        settings = GenerationSettings(num_beams=args.num_beams)
    except ValueError as problem:
        raise UserError(f"--{problem}") from None
    loaded = trained_model.load(args.checkpoint, device="cpu")
    formatter = Formatter(loaded.tokenizer, loaded.default_history_turns())
    contexts = [[Turn("speaker", message)] for message in MESSAGES]

    def replies() -> list[tuple[str, int]]:
        # One message at a time: a batch would left-pad the prompts, and chat never pads.
        out = []
        for context in contexts:
            reply = generate_replies(loaded.model, formatter, [context], settings)[0]
            out.append((reply, len(loaded.tokenizer(reply).input_ids)))
        return out

    with torch.no_grad():
        tuned = replies()
        if args.no_zero_shot:
            zero_shot = [("(not run)", 0)] * len(contexts)
        else:
            with loaded.model.disable_adapter():
                zero_shot = replies()
    limit = settings.max_new_tokens
    print("| message | zero-shot | fine-tuned |")
    print("| --- | --- | --- |")
    for message, (z, zn), (t, tn) in zip(MESSAGES, zero_shot, tuned):
        print(f"| {message} | {_cell(z, zn, limit)} | {_cell(t, tn, limit)} |")


if __name__ == "__main__":
    run_cli(main)
