"""`python chat.py`: talk to a trained model in a terminal, or through a pipe one line at a time.

In a terminal: a `you>` prompt, the reply streamed after `bot>`, and the commands /help, /reset,
/emotion and /quit (Ctrl-D and Ctrl-C leave too). With stdin not a terminal: one message per line in, one
reply per line out on stdout, everything else on stderr. `--message TEXT` answers one message.
The conversation is prompted exactly as training formatted it (`conversation.Formatter`), from the
last `--history_turns` turns, cut from the left to fit the model's context with the reply.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, fields
from typing import Any, BinaryIO, TextIO

import transformers

from empathic_lora.errors import ArgumentParser, UserError, run_cli
from empathic_lora.lm.decoding import GenerationSettings, printable, setting_problem
from empathic_lora.safety import crisis_check
from empathic_lora.session.conversation_state import Conversation
from empathic_lora.session.flags import add_session_flags, load_session_model

PROMPT, BOT = "you> ", "bot> "
NO_REPLY = "(the model produced no printable reply; try rephrasing, or /reset)"
COMMANDS = {
    "/help": "list the commands and the current generation settings",
    "/reset": "forget the conversation so far",
    "/emotion": "what the emotion head reads in the conversation so far",
    "/quit": "leave (Ctrl-D and Ctrl-C leave too)",
}


def help_text(session: Conversation) -> str:
    commands = "\n".join(f"  {name:<8} {text}" for name, text in COMMANDS.items())
    settings = " ".join(f"{key}={value}" for key, value in asdict(session.settings).items())
    device = next(session.loaded.model.parameters()).device
    window = session.formatter.history_turns
    return (
        f"commands:\n{commands}\ngeneration: {settings}\n"
        f"history: {len(session.history)} turns (context: the last {'all' if window is None else window}); "
        f"device: {device}; model: {session.loaded.source}"
    )


def answer(
    session: Conversation, message: str, out: TextIO, prefix: str, crisis_out: TextIO, show_emotion: bool = False
) -> str:
    """Write the reply to `message` to `out` as it streams, on one line; the crisis line after it.
    `show_emotion`: the emotion head's reading first, where the crisis line goes.

    With a fixed crisis reply (`--crisis_reply fixed`) the check runs before generating: a message
    that signals (alone or with the turns before it) gets that reply and no model text at all. The
    line follows every reply from the first signal until /reset."""
    text, cut = session.fit(message)
    if cut:
        print(
            f"note: the message ({len(message)} characters) is longer than the model's context holds with a "
            f"{session.settings.max_new_tokens}-token reply; only its last {session.message_room} tokens are read",
            file=sys.stderr, flush=True,
        )
    if show_emotion:
        print(session.emotion(text), file=crisis_out, flush=True)
    out.write(prefix)

    def show(piece: str) -> None:
        out.write(piece)
        out.flush()

    fixed = session.crisis.reply
    # With the model's reply the check waits until it is written: the semantic layer would delay the first word.
    verdict = session.hear(message) if fixed is not None else None
    if verdict is not None and verdict.signal:
        reply = fixed
        session.remember(text, reply)
        print(reply, file=out, flush=True)
    else:
        reply = session.respond(text, show)
        print("" if reply else NO_REPLY, file=out, flush=True)
        verdict = verdict or session.hear(message)
    if verdict.notice:
        print(session.crisis.message, file=crisis_out, flush=True)
    return reply


def converse(
    session: Conversation, lines: Iterable[str], out: TextIO, interactive: bool, show_emotion: bool = False
) -> None:
    """Answer each line; lines starting with `/` are commands. Ends at /quit or the end of input."""
    notes = out if interactive else sys.stderr  # when piped, stdout holds replies only
    for line in lines:
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            command = text.lower()
            if command == "/quit":
                return
            if command == "/reset":
                session.reset()
                print("history cleared", file=notes, flush=True)
            elif command == "/help":
                print(help_text(session), file=notes, flush=True)
            elif command == "/emotion":
                print(session.emotion(), file=notes, flush=True)
            else:
                print(f"unknown command {printable(text)[:40]!r}; /help lists the commands", file=notes, flush=True)
            continue
        answer(session, text, out, BOT if interactive else "", out if interactive else sys.stderr, show_emotion)


def typed_lines() -> Iterator[str]:
    """Lines typed at the prompt, with line editing; ends at Ctrl-D."""
    import readline  # noqa: F401  (imported for its side effect: input() gains editing and history)

    sys.stdin.reconfigure(errors="replace")  # invalid UTF-8 typed or pasted is replaced, not fatal
    while True:
        try:
            yield input(PROMPT)
        except EOFError:
            print()
            return


def piped_lines(stream: BinaryIO) -> Iterator[str]:
    """Lines of a byte stream; invalid UTF-8 becomes U+FFFD instead of stopping the chat."""
    for raw in stream:
        yield raw.decode("utf-8", errors="replace")


def _setting(name: str, parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """The argparse type of the generation flag `name`: parsed, then held to `GenerationSettings`' limits."""

    def check(text: str) -> Any:
        value = parse(text)
        problem = setting_problem(name, value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    check.__name__ = parse.__name__  # argparse names the type in its "invalid float value" message
    return check


def build_parser() -> argparse.ArgumentParser:
    defaults = GenerationSettings()
    parser = ArgumentParser(
        prog="chat.py", description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add_session_flags(parser)
    parser.add_argument("--message", help="answer this one message on stdout and exit")
    parser.add_argument("--show_emotion", action="store_true", help="before each reply, what the emotion head reads "
                        "in the conversation, e.g. (sounds: anxious 0.62, afraid 0.21); needs a model trained with one")
    gen = parser.add_argument_group("generation (greedy by default; --do_sample for sampling)")
    gen.add_argument("--max_new_tokens", type=_setting("max_new_tokens", int), default=defaults.max_new_tokens, help="longest reply, in tokens")
    gen.add_argument("--do_sample", action="store_true", help="sample instead of greedy decoding")
    gen.add_argument("--temperature", type=_setting("temperature", float), default=defaults.temperature, help="sampling temperature")
    gen.add_argument("--top_p", type=_setting("top_p", float), default=defaults.top_p, help="nucleus sampling mass")
    gen.add_argument("--top_k", type=_setting("top_k", int), default=defaults.top_k, help="sample among the k likeliest (0: all)")
    gen.add_argument("--repetition_penalty", type=_setting("repetition_penalty", float), default=defaults.repetition_penalty, help="1: none")
    gen.add_argument("--no_repeat_ngram_size", type=_setting("no_repeat_ngram_size", int), default=defaults.no_repeat_ngram_size,
                     help="never repeat an n-gram of this size (0: off)")
    gen.add_argument("--num_beams", type=_setting("num_beams", int), default=defaults.num_beams, help="beam search (no streaming) when > 1")
    gen.add_argument("--seed", type=int, default=defaults.seed, help="seed each reply: same history, same reply")
    return parser


def _quiet() -> None:
    """Chat's stdout is the conversation: library notices and warnings would only interleave with it."""
    warnings.filterwarnings("ignore")
    for name in ("transformers", "lightning", "lightning.pytorch", "lightning.fabric", "datasets", "peft", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    transformers.utils.logging.disable_progress_bar()
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):  # a reply never fails on a terminal that lacks a character
            stream.reconfigure(errors="replace")


def chat(args: argparse.Namespace) -> None:
    _quiet()
    if args.message is not None and not args.message.strip():
        raise UserError("--message is empty")
    crisis = crisis_check.from_flags(args)
    settings = GenerationSettings(**{f.name: getattr(args, f.name) for f in fields(GenerationSettings)})
    print(f"loading {args.checkpoint} ...", file=sys.stderr, flush=True)
    loaded, history = load_session_model(args)
    if args.show_emotion and loaded.emotion_head is None:
        raise UserError(f"--show_emotion: {loaded.source} has no emotion head (train with --model.emotion_loss_weight > 0)")
    session = Conversation(loaded, settings, history, crisis)
    if args.message is not None:
        answer(session, args.message.strip(), sys.stdout, "", sys.stdout, args.show_emotion)
        return
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"chatting with {loaded.source}; /help lists the commands, /quit leaves", flush=True)
    try:
        converse(session, typed_lines() if interactive else piped_lines(sys.stdin.buffer), sys.stdout, interactive,
                 args.show_emotion)
    except KeyboardInterrupt:
        print(flush=True)  # Ctrl-C leaves cleanly, on a fresh line


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run_cli(lambda: chat(args))
