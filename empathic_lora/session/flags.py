"""The flags chat.py and serve.py share, defined and checked once: which trained model to load, on
what device, with how much context (these also for `score --probe`), and the crisis check's settings."""

from __future__ import annotations

import argparse
from typing import get_args

from empathic_lora.safety import crisis_check
from empathic_lora.session import trained_model


def positive_int(text: str) -> int:
    """argparse type of a count that must be at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


positive_int.__name__ = "int"  # argparse names the type in its "invalid int value" message


def add_session_flags(parser: argparse.ArgumentParser) -> None:
    """--checkpoint, --base_model, --gguf_file, --history_turns, --device and the crisis flags."""
    add_model_flags(parser)
    crisis_check.add_flags(parser)


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """--checkpoint, --base_model, --gguf_file, --history_turns, --device: the model and its context
    window, for a command that talks to a trained model without a person (the repetition probe)."""
    parser.add_argument(
        "--checkpoint", required=True,
        help="a .ckpt from train.py, a run directory (its newest last.ckpt, e.g. runs/quickstart), "
        "or a directory written by `python -m empathic_lora.export` (adapter or merged)",
    )
    parser.add_argument("--base_model", help="local copy of the recorded base model (directory), for offline use")
    parser.add_argument("--gguf_file", help="the GGUF file inside --base_model, when the base is one")
    parser.add_argument(
        "--history_turns", type=positive_int,
        help="turns of the conversation kept as context, the new message included (default: what the "
        "checkpoint was trained with)",
    )
    parser.add_argument("--device", choices=get_args(trained_model.Device), default="auto", help="auto: CUDA when available")


def load_session_model(args: argparse.Namespace) -> tuple[trained_model.TrainedModel, int | None]:
    """The model the session flags name, and the context window to use (`--history_turns`, or what
    the checkpoint was trained with)."""
    loaded = trained_model.load(args.checkpoint, args.base_model, args.gguf_file, args.device)
    history = args.history_turns if args.history_turns is not None else loaded.default_history_turns()
    return loaded, history
