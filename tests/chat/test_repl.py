"""chat.py: loading, the REPL through a real pseudo-terminal and through a pipe, input edge cases,
the prompt window, streaming, and crisis language."""

from __future__ import annotations

import io
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
import torch
from conftest import ROOT, run_main, run_python

from empathic_lora.chat import repl
from empathic_lora.conversation import MARKERS, Turn
from empathic_lora.data.datamodule import EmpatheticDialoguesDataModule
from empathic_lora.errors import UserError
from empathic_lora.lm.decoding import (
    GenerationSettings,
    _ReplyStreamer,
    context_window,
    generate_replies,
    printable,
    prompt_budget,
    stream_reply,
)
from empathic_lora.safety.crisis_check import DEFAULT_MESSAGE, DEFAULT_REPLY, CrisisCheck
from empathic_lora.session import conversation_state, trained_model
from empathic_lora.session.conversation_state import Conversation
from empathic_lora.train.cli import EmpathicCLI
from empathic_lora.train.lora_module import EmpatheticLoRAModule

MESSAGE = "I feel overwhelmed with work"


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """The tiny model decodes fastest on one thread; more only contend with other test processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")  # for the chat.py subprocesses
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def loaded(tiny_ckpt: Path) -> trained_model.TrainedModel:
    return trained_model.load(tiny_ckpt, device="cpu")


def _session(loaded: trained_model.TrainedModel, history_turns: int | None = 4, **settings) -> Conversation:
    return Conversation(loaded, GenerationSettings(**settings), history_turns, CrisisCheck())


def _assert_reply(line: str) -> None:
    assert line.strip() and line == line.strip() and line != repl.NO_REPLY, repr(line)
    assert not any(marker in line for marker in MARKERS), line
    assert printable(line) == line, repr(line)


# -- loading ---------------------------------------------------------------------------------------
def test_reloaded_checkpoint_gives_the_trained_logits(tmp_path: Path) -> None:
    cli = EmpathicCLI(
        EmpatheticLoRAModule, EmpatheticDialoguesDataModule, seed_everything_default=0,
        args=["fit", "--config", "configs/tiny.yaml", "--trainer.max_steps", "4", "--trainer.enable_progress_bar",
              "false", "--trainer.default_root_dir", str(tmp_path)],
    )
    trained = cli.model.eval()
    reloaded = trained_model.load(tmp_path, device="cpu")  # the run root: its newest last.ckpt
    ids = torch.tensor([trained.tokenizer(" <|prompt|> I lost my job <|response|>")["input_ids"]])
    with torch.no_grad():
        expected = trained.model(input_ids=ids).logits
        with trained.model.disable_adapter():
            untouched = trained.model(input_ids=ids).logits
        assert torch.equal(reloaded.model(input_ids=ids).logits, expected)
    assert not torch.allclose(expected, untouched, atol=1e-3)  # the adapter really changes the model


def test_checkpoint_errors_are_one_line(tmp_path: Path, tiny_ckpt: Path, capsys: pytest.CaptureFixture) -> None:
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(tiny_ckpt.read_bytes()[:5000])
    for path, needle in [(tmp_path / "missing.ckpt", "does not exist"), (corrupt, "truncated"), (tmp_path, "neither")]:
        with pytest.raises(SystemExit) as exit:
            repl.main(["--checkpoint", str(path), "--message", MESSAGE])
        assert exit.value.code == 2
        err = capsys.readouterr().err
        assert "error: " in err and needle in err and str(path) in err and "Traceback" not in err, err


def test_base_model_mismatch_is_refused_naming_both(tiny_ckpt: Path, distilgpt2_dir: Path) -> None:
    with pytest.raises(UserError, match=f"'builtin:tiny-gpt2', which differs from '{distilgpt2_dir}'"):
        trained_model.load(tiny_ckpt, base_model=str(distilgpt2_dir), device="cpu")


def test_an_adapter_missing_a_weight_is_refused(tmp_path: Path, tiny_ckpt: Path) -> None:
    ckpt = torch.load(tiny_ckpt, weights_only=True)
    ckpt["state_dict"].pop(sorted(ckpt["state_dict"])[0])
    torch.save(ckpt, tmp_path / "partial.ckpt")
    with pytest.raises(UserError, match="1 adapter weight"):
        trained_model.load(tmp_path / "partial.ckpt", device="cpu")


# -- the prompt window, streaming and decoding -----------------------------------------------------
def test_prompt_keeps_the_last_turns_and_the_reply_budget(loaded: trained_model.TrainedModel, monkeypatch) -> None:
    session = _session(loaded, history_turns=3, max_new_tokens=200)
    session.history = [Turn("speaker" if i % 2 == 0 else "listener", f"turn{i} words") for i in range(6)]
    prompts = []
    generate = loaded.model.generate
    monkeypatch.setattr(loaded.model, "generate", lambda **kw: prompts.append(kw["input_ids"][0].tolist()) or generate(**kw))
    long_message = " ".join(f"w{i}" for i in range(300)) + " the newest words"
    text, cut = session.fit(long_message)
    assert cut and text.endswith("the newest words")
    session.respond(text, lambda piece: None)
    prompt = prompts[0]
    budget = prompt_budget(loaded.model, session.settings)
    assert budget == context_window(loaded.model) - 200
    assert len(prompt) <= budget
    decoded = loaded.tokenizer.decode(prompt)
    assert decoded.endswith("the newest words <|response|>")
    assert "turn5" in decoded or len(prompt) == budget  # kept unless the long message needed all the room
    assert not any(f"turn{i}" in decoded for i in range(4))  # older than the last 3 turns
    assert len(session.history) <= 3

    short = _session(loaded, history_turns=3)
    short.history = [Turn("speaker", "turn0 a"), Turn("listener", "turn1 b"), Turn("speaker", "turn2 c"), Turn("listener", "turn3 d")]
    prompts.clear()
    short.respond("turn4 e", lambda piece: None)
    decoded = loaded.tokenizer.decode(prompts[0])
    assert [f"turn{i}" in decoded for i in range(5)] == [False, False, True, True, True]


def test_streamed_reply_equals_the_evaluation_reply(loaded: trained_model.TrainedModel) -> None:
    turns = [Turn("speaker", MESSAGE)]
    settings = GenerationSettings(max_new_tokens=24)
    pieces: list[str] = []
    reply = stream_reply(loaded.model, _session(loaded).formatter, turns, settings, pieces.append)
    assert len(pieces) > 1 and "".join(pieces) == reply
    assert reply == generate_replies(loaded.model, _session(loaded).formatter, [turns], settings)[0]


def test_a_beam_search_reply_arrives_whole_and_equals_the_evaluation_reply(loaded: trained_model.TrainedModel) -> None:
    turns = [Turn("speaker", MESSAGE)]
    settings = GenerationSettings(max_new_tokens=12, num_beams=3)
    pieces: list[str] = []
    reply = stream_reply(loaded.model, _session(loaded).formatter, turns, settings, pieces.append)
    assert pieces == [reply] and reply
    assert reply == generate_replies(loaded.model, _session(loaded).formatter, [turns], settings)[0]


def test_a_fixed_seed_gives_the_same_sampled_reply(loaded: trained_model.TrainedModel) -> None:
    formatter = _session(loaded).formatter
    settings = GenerationSettings(do_sample=True, temperature=1.5, seed=5, max_new_tokens=16)
    replies = [stream_reply(loaded.model, formatter, [Turn("speaker", MESSAGE)], settings, lambda p: None) for _ in range(2)]
    assert replies[0] == replies[1] and replies[0]


def test_stream_hides_markers_and_control_characters(loaded: trained_model.TrainedModel) -> None:
    pieces: list[str] = []
    streamer = _ReplyStreamer(loaded.tokenizer, pieces.append)
    streamer.put(torch.tensor([1, 2, 3]))  # the prompt: skipped
    generated = loaded.tokenizer(" Oh\x1b[2J no,\n that\u202e is hard. <|prompt|> I also", add_special_tokens=False)["input_ids"]
    for token in generated:
        streamer.put(torch.tensor([token]))
        assert not any(c in "".join(pieces) for c in "<|\x1b\n\u202e")
    streamer.end()
    assert "".join(pieces) == streamer.reply == "Oh[2J no,  that is hard."


def test_empty_reply_says_so_and_keeps_the_history(loaded: trained_model.TrainedModel, monkeypatch) -> None:
    session = _session(loaded)
    monkeypatch.setattr(conversation_state, "stream_reply", lambda *args: "")
    out = io.StringIO()
    repl.answer(session, MESSAGE, out, "", out)
    assert out.getvalue() == repl.NO_REPLY + "\n"
    assert session.history == []


def test_a_reply_budget_that_leaves_no_room_is_refused(loaded: trained_model.TrainedModel) -> None:
    with pytest.raises(UserError, match="--max_new_tokens 256 leaves no room"):
        _session(loaded, max_new_tokens=256)


# -- crisis language -------------------------------------------------------------------------------
@pytest.mark.parametrize("message", [
    "I want to kill myself", "Sometimes I think about suicide.", "I don’t want to live anymore",
    "I've been cutting myself again", "everyone would be BETTER OFF DEAD without me", "I keep thinking of self-harm",
])
def test_crisis_phrases_add_the_resource_line(loaded: trained_model.TrainedModel, message: str) -> None:
    out, crisis_out = io.StringIO(), io.StringIO()
    repl.answer(_session(loaded, max_new_tokens=4), message, out, "", crisis_out)
    assert out.getvalue().strip()  # it still answers
    assert crisis_out.getvalue() == DEFAULT_MESSAGE + "\n"
    assert "not a therapist" in DEFAULT_MESSAGE and "crisis line" in DEFAULT_MESSAGE


@pytest.mark.parametrize("message", [
    "I feel so sad since my dog died.", "I cried all night after the breakup", "My work is killing me, I'm exhausted",
    "I cut my finger while cooking", "I'm devastated that I failed my exam",
])
def test_ordinary_sad_messages_do_not_trigger_it(loaded: trained_model.TrainedModel, message: str) -> None:
    crisis_out = io.StringIO()
    repl.answer(_session(loaded, max_new_tokens=4), message, io.StringIO(), "", crisis_out)
    assert crisis_out.getvalue() == ""


MODEL_TEXT = "GENERATED BY THE MODEL"


@pytest.fixture
def generations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every reply the model would give is MODEL_TEXT, recognisable; yields the messages it was asked to answer."""
    asked: list[str] = []

    def fake(model, formatter, turns, settings, on_text, **kwargs) -> str:
        asked.append(turns[-1].text)
        on_text(MODEL_TEXT)
        return MODEL_TEXT

    monkeypatch.setattr(conversation_state, "stream_reply", fake)
    return asked


def test_a_crisis_message_gets_the_fixed_reply_and_no_generation(
    loaded: trained_model.TrainedModel, generations: list[str]
) -> None:
    session, out, crisis_out = _session(loaded), io.StringIO(), io.StringIO()
    repl.answer(session, "I want to kill myself", out, "", crisis_out)
    assert generations == [] and out.getvalue() == DEFAULT_REPLY + "\n" and crisis_out.getvalue() == DEFAULT_MESSAGE + "\n"
    # The history holds what the person saw, as an API client sends it back.
    assert [(t.role, t.text) for t in session.history] == [("speaker", "I want to kill myself"), ("listener", DEFAULT_REPLY)]
    assert "therapist" not in DEFAULT_REPLY.lower() and "not a therapist" in DEFAULT_MESSAGE  # said once, in the line


def test_a_split_signal_is_caught_and_the_line_stays_until_reset(
    loaded: trained_model.TrainedModel, generations: list[str]
) -> None:
    session = _session(loaded)

    def say(message: str) -> tuple[str, str]:
        out, crisis_out = io.StringIO(), io.StringIO()
        repl.answer(session, message, out, "", crisis_out)
        return out.getvalue().strip(), crisis_out.getvalue().strip()

    assert say("I have everything I need now.") == (MODEL_TEXT, "")
    assert say("i just want to") == (MODEL_TEXT, "")
    assert say("die") == (DEFAULT_REPLY, DEFAULT_MESSAGE)  # "i just want to" + "die"
    for harmless in ("what's for dinner", "I watched a film", "my cat is asleep", "it's raining"):
        assert say(harmless) == (MODEL_TEXT, DEFAULT_MESSAGE)  # the model answers; the line stays
    session.reset()
    assert say("what's for dinner") == (MODEL_TEXT, "")


def test_crisis_reply_model_keeps_the_generated_reply(loaded: trained_model.TrainedModel, generations: list[str]) -> None:
    session = Conversation(loaded, GenerationSettings(), 4, CrisisCheck(reply=None))
    out, crisis_out = io.StringIO(), io.StringIO()
    repl.answer(session, "I want to kill myself", out, "", crisis_out)
    assert generations == ["I want to kill myself"]
    assert out.getvalue() == MODEL_TEXT + "\n" and crisis_out.getvalue() == DEFAULT_MESSAGE + "\n"


@pytest.mark.parametrize(("flags", "reply"), [([], DEFAULT_REPLY), (["--crisis_reply", "model"], MODEL_TEXT)])
def test_one_message_with_crisis_language(tiny_ckpt: Path, generations: list[str], flags: list[str], reply: str) -> None:
    result = run_main(repl.main, "--checkpoint", str(tiny_ckpt), "--message", "I want to end my life",
                      "--crisis_semantic", "off", *flags)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [reply, DEFAULT_MESSAGE]


def test_the_phrase_list_is_configurable(tmp_path: Path) -> None:
    phrases = tmp_path / "phrases.txt"
    phrases.write_text("# my list\ngive up on everything  # ours\n\n")
    check = CrisisCheck.from_file(phrases, "call someone", builtin=False)
    assert check.matches("I want to GIVE UP on everything.") and not check.matches("I want to kill myself")
    phrases.write_text("# nothing\n")
    with pytest.raises(UserError, match="holds no phrase"):
        CrisisCheck.from_file(phrases)


# -- the command line: pseudo-terminal, pipe, one message ------------------------------------------
def _as_a_terminal_job() -> None:
    """Ctrl-C at its default, as an interactive shell starts a foreground job. A pytest launched in
    the background (`pytest &`, nohup, some CI runners) ignores SIGINT, every child inherits that,
    and Python then installs no KeyboardInterrupt handler: the Ctrl-C session would wait forever."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _spawn(ckpt: Path) -> pexpect.spawn:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TERM": "dumb"}
    return pexpect.spawn(sys.executable, ["chat.py", "--checkpoint", str(ckpt)], cwd=str(ROOT), env=env,
                         encoding="utf-8", timeout=180, dimensions=(40, 300), preexec_fn=_as_a_terminal_job)


def _expect_clean_exit(child: pexpect.spawn) -> None:
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and "Traceback" not in child.before, child.before


def test_terminal_sessions(tiny_ckpt: Path) -> None:
    # Started together so that their start-up overlaps; each then leaves a different way.
    talk, ctrl_d, ctrl_c = (_spawn(tiny_ckpt) for _ in range(3))
    talk.expect_exact(repl.PROMPT)
    talk.sendline(MESSAGE)
    talk.expect(r"bot> ([^\r\n]*)\r\n")  # pexpect compiles with DOTALL: a greedy .* would run on past the line
    _assert_reply(talk.match.group(1))
    talk.expect_exact(repl.PROMPT)
    talk.sendline("/help")
    talk.expect(r"history: (\d+) turns")
    assert talk.match.group(1) == "2"
    for command in repl.COMMANDS:
        assert command in talk.before
    # A signal split across two messages: the fixed reply, no model text, and the line on stdout; the
    # line stays after a harmless message, until /reset.
    # (Halves neither layer flags alone: the learned layer flags "i just want to" by itself.)
    talk.sendline("there is nothing")
    talk.expect(r"bot> ([^\r\n]*)\r\n")
    assert talk.match.group(1) != DEFAULT_REPLY
    talk.expect_exact(repl.PROMPT)
    assert DEFAULT_MESSAGE not in talk.before
    talk.sendline("left to live for")
    talk.expect_exact(f"bot> {DEFAULT_REPLY}\r\n{DEFAULT_MESSAGE}\r\n")
    talk.sendline(MESSAGE)
    talk.expect(r"bot> ([^\r\n]*)\r\n")
    _assert_reply(talk.match.group(1))
    talk.expect_exact(repl.PROMPT)
    assert DEFAULT_MESSAGE in talk.before
    talk.sendline("/reset")
    talk.expect_exact("history cleared")
    talk.sendline("/help")
    talk.expect(r"history: (\d+) turns")
    assert talk.match.group(1) == "0"
    talk.expect_exact(repl.PROMPT)
    talk.sendline(MESSAGE)
    talk.expect_exact("bot> ")
    talk.expect_exact(repl.PROMPT)
    assert DEFAULT_MESSAGE not in talk.before
    talk.sendline("/quit")
    _expect_clean_exit(talk)

    ctrl_d.expect_exact(repl.PROMPT)
    ctrl_d.sendeof()
    _expect_clean_exit(ctrl_d)
    ctrl_c.expect_exact(repl.PROMPT)
    ctrl_c.sendintr()
    _expect_clean_exit(ctrl_c)


def test_piped_mode_writes_one_reply_line_per_message(tiny_ckpt: Path) -> None:
    long = " ".join(["tired"] * 2000)  # 11,999 characters
    megabyte = "a" * 2**20
    data = (
        f"{MESSAGE}\n\n   \n".encode() + b"\xff\xfe I feel \xc3 lost\n"  # invalid UTF-8
        + f"{long}\n\n{megabyte}\n".encode()
        + b"There is nothing\nleft to live for\nok\n/reset\nok\n/quit\nnever read\n"  # a signal split in two
    )
    result = run_python("chat.py", "--checkpoint", str(tiny_ckpt), input=data)
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 8, lines
    for line in lines:
        _assert_reply(line)
    # The fixed reply to the second half only; the line on stderr for it and for "ok" after it, not after /reset.
    assert [line == DEFAULT_REPLY for line in lines] == [False] * 5 + [True, False, False]
    assert stderr.count(DEFAULT_MESSAGE) == 2, stderr
    assert stderr.count("note: the message") == 2, stderr
    assert f"({len(long)} characters)" in stderr and f"({2**20} characters)" in stderr
    assert "Traceback" not in stderr and "warn" not in stderr.lower(), stderr


def test_bad_generation_flag_names_it(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit:
        repl.build_parser().parse_args(["--checkpoint", "x.ckpt", "--top_p", "1.5"])
    assert exit.value.code == 2 and "argument --top_p: must be in (0, 1], got 1.5" in capsys.readouterr().err
