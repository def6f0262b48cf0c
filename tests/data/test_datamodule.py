"""The DataModule's tokenized cache and batches, on the shipped sample with the builtin tokenizer."""

from pathlib import Path

import pytest

from empathic_lora.conversation import Formatter, context_turns
from empathic_lora.data.datamodule import EmpatheticDialoguesDataModule
from empathic_lora.lm.pretrained import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("builtin:tiny-gpt2")


def _datamodule(tokenizer, cache: Path, **kwargs) -> EmpatheticDialoguesDataModule:
    dm = EmpatheticDialoguesDataModule(data_dir="builtin:sample", cache_dir=str(cache), tokenizer=tokenizer, **kwargs)
    dm.setup("fit")
    return dm


def test_second_run_reuses_the_tokenized_cache(tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _datamodule(tokenizer, tmp_path, max_length=128)
    calls = []
    original = Formatter.encode_examples
    monkeypatch.setattr(Formatter, "encode_examples", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    second = _datamodule(tokenizer, tmp_path, max_length=128)
    assert calls == []  # same data, tokenizer and settings: nothing tokenized again
    assert second.datasets["train"]["input_ids"] == first.datasets["train"]["input_ids"]
    _datamodule(tokenizer, tmp_path, max_length=64)
    assert calls  # another max_length is another cache entry


def test_a_split_cached_by_another_process_meanwhile_is_kept(tokenizer, tmp_path: Path) -> None:
    """Two runs sharing the cache tokenize the same split at once: the one that finishes second
    neither fails nor disturbs the first one's entry, and leaves no staging directory behind."""
    first = _datamodule(tokenizer, tmp_path, max_length=128)
    path = first._cache_path("train")
    stamp = (path / "empathic_lora.json").stat().st_mtime_ns
    late = EmpatheticDialoguesDataModule(data_dir="builtin:sample", cache_dir=str(tmp_path), tokenizer=tokenizer, max_length=128)
    late._tokenize("train", path)  # as if it had started before the first one's rename
    assert (path / "empathic_lora.json").stat().st_mtime_ns == stamp
    assert [p.name for p in path.parent.iterdir()] == ["train"]  # no staging directory left
    late.setup("fit")
    assert late.datasets["train"]["input_ids"] == first.datasets["train"]["input_ids"]


def test_batches_are_padded_to_their_longest_example(tokenizer, tmp_path: Path) -> None:
    dm = _datamodule(tokenizer, tmp_path, max_length=128, batch_size=4)
    lengths = []
    for batch in dm.train_dataloader():
        width = batch["input_ids"].shape[1]
        assert width == int(batch["attention_mask"].sum(1).max())
        lengths.append(width)
    assert len(set(lengths)) > 1  # widths follow the batch, not max_length


def test_seed_format_has_one_example_per_row(tokenizer, tmp_path: Path) -> None:
    dm = _datamodule(tokenizer, tmp_path, format="seed")
    assert len(dm.datasets["train"]) == 196  # rows in the sample's train.csv
    first = dm.examples("train")[0]
    assert [t.role for t in first.context] == ["speaker"] and first.context[0].text == first.situation


def test_chat_gets_the_context_window_the_run_trained_with(tokenizer, tmp_path: Path) -> None:
    dialogue = _datamodule(tokenizer, tmp_path, history_turns=2)
    assert context_turns(dict(dialogue.hparams)) == 2
    assert context_turns(dict(_datamodule(tokenizer, tmp_path, history_turns=None).hparams)) is None
    # seed examples hold the situation alone, whatever history_turns says
    assert context_turns(dict(_datamodule(tokenizer, tmp_path, format="seed", history_turns=6).hparams)) == 1
    # a checkpoint without DataModule settings: the DataModule's own default
    assert context_turns({}) == _datamodule(tokenizer, tmp_path).hparams.history_turns
