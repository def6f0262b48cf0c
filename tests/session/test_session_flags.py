"""chat.py and serve.py take one set of session flags, defined and checked once (`session/flags.py`),
and load the model they name the same way."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_main

from empathic_lora.chat import repl
from empathic_lora.safety import crisis_check
from empathic_lora.serve import api_server
from empathic_lora.session.flags import load_session_model

SESSION_FLAGS = {"--checkpoint", "--base_model", "--gguf_file", "--history_turns", "--device", "--crisis_phrases",
                 "--crisis_phrases_only", "--crisis_semantic", "--crisis_message", "--crisis_reply"}
PARSERS = {"chat": repl.build_parser, "serve": api_server.build_parser}


@pytest.mark.parametrize("command", PARSERS)
def test_both_commands_take_the_session_flags(command: str) -> None:
    options = {option for action in PARSERS[command]()._actions for option in action.option_strings}
    assert SESSION_FLAGS <= options


@pytest.mark.parametrize(("flags", "needle"), [
    (["--history_turns", "0"], "argument --history_turns: must be >= 1, got 0"),
    (["--history_turns", "two"], "argument --history_turns: invalid int value: 'two'"),
    (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    (["--crisis_semantic", "maybe"], "argument --crisis_semantic: invalid choice: 'maybe'"),
    (["--crisis_reply", "none"], "argument --crisis_reply: invalid choice: 'none'"),
])
def test_a_bad_session_flag_is_the_same_one_line_in_both(flags: list[str], needle: str) -> None:
    for main in (repl.main, api_server.main):
        result = run_main(main, "--checkpoint", "x.ckpt", *flags)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and needle in result.stderr, result.stderr


def test_both_build_the_crisis_check_from_the_same_flags(tmp_path: Path) -> None:
    phrases = tmp_path / "phrases.txt"
    phrases.write_text("purple elephant\n", encoding="utf-8")
    flags = ["--checkpoint", "x", "--crisis_phrases", str(phrases), "--crisis_phrases_only", "--crisis_semantic", "off",
             "--crisis_message", "call someone"]
    for build in PARSERS.values():
        check = crisis_check.from_flags(build().parse_args(flags))
        assert check.matches("I saw a purple elephant") and not check.matches("I want to die")
        assert check.message == "call someone" and check.semantic is None and check.reply == crisis_check.DEFAULT_REPLY
        assert crisis_check.from_flags(build().parse_args([*flags, "--crisis_reply", "model"])).reply is None


def test_the_context_window_is_the_checkpoints_unless_given(tiny_ckpt: Path) -> None:
    for build in PARSERS.values():
        loaded, history = load_session_model(build().parse_args(["--checkpoint", str(tiny_ckpt), "--device", "cpu"]))
        assert history == loaded.default_history_turns() == 4  # configs/tiny.yaml trains with 4
        _, history = load_session_model(build().parse_args(["--checkpoint", str(tiny_ckpt), "--history_turns", "2"]))
        assert history == 2
