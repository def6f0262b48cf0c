"""`python -m empathic_lora.pairs data|self`: the data's and the model's own pair sources, on the
shipped sample (the model: the session's tiny checkpoint)."""

from __future__ import annotations

from pathlib import Path

from conftest import assert_one_line_error, run_main

from empathic_lora.data.datamodule import EmpatheticDialoguesDataModule
from empathic_lora.data.preference_pairs import GROUP_OF, read
from empathic_lora.errors import run_cli
from empathic_lora.pairs import main as pairs_main


def _pairs(*args: str):
    return run_main(lambda argv: run_cli(lambda: pairs_main(list(argv))), *args)


def test_data_pairs_command_writes_the_opposite_emotion_pairs(tmp_path: Path) -> None:
    out = tmp_path / "data.jsonl"
    result = _pairs("data", "--split", "val", "--out", str(out))
    assert result.returncode == 0, result.stderr
    pairs = read(out)
    examples = EmpatheticDialoguesDataModule("builtin:sample").examples("val")
    assert len(pairs) == sum(GROUP_OF[e.emotion] != "other" for e in examples) > 0
    again = _pairs("data", "--split", "val", "--out", str(out))
    assert_one_line_error(again, "--out", "exists")


def test_self_pairs_reject_the_checkpoints_own_greedy_reply(tmp_path: Path, tiny_ckpt: Path) -> None:
    out = tmp_path / "self.jsonl"
    result = _pairs("self", "--checkpoint", str(tiny_ckpt), "--split", "val", "--max_examples", "6", "--batch_size", "4",
                    "--max_new_tokens", "16", "--device", "cpu", "--out", str(out))
    assert result.returncode == 0, result.stderr
    pairs = read(out)
    examples = {tuple(e.context): e for e in EmpatheticDialoguesDataModule("builtin:sample", max_examples=6).examples("val")}
    assert 0 < len(pairs) <= 6
    for pair in pairs:
        assert pair.chosen == examples[pair.context].target != pair.rejected
    # The rejected replies are the model's greedy ones: generated again one by one, they are the same.
    from empathic_lora.conversation import Formatter
    from empathic_lora.lm.decoding import GenerationSettings, generate_replies
    from empathic_lora.session import trained_model

    trained = trained_model.load(tiny_ckpt, device="cpu")
    formatter = Formatter(trained.tokenizer, trained.default_history_turns())
    first = pairs[0]
    assert generate_replies(trained.model, formatter, [first.context], GenerationSettings(max_new_tokens=16)) == [first.rejected]


def test_self_pairs_refuse_a_missing_checkpoint(tmp_path: Path) -> None:
    result = _pairs("self", "--checkpoint", str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "x.jsonl"))
    assert_one_line_error(result, "none.ckpt")
    assert not (tmp_path / "x.jsonl").exists()
