"""One rule for the base model's mode, whatever the load path: train mode (its own dropout on) in
`training_step`, as the reference notebook's Hugging Face Trainer has it, and eval mode in validation,
test, generation and chat."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from empathic_lora.data.datamodule import EmpatheticDialoguesDataModule
from empathic_lora.evaluate import reply_scoring
from empathic_lora.lm import pretrained
from empathic_lora.lm.builtin_models import TINY_GPT2
from empathic_lora.session import trained_model
from empathic_lora.train.lora_module import EmpatheticLoRAModule


def _base_dropouts(module: torch.nn.Module) -> list[torch.nn.Dropout]:
    """The frozen base's own dropout layers (not LoRA's)."""
    return [m for name, m in module.named_modules() if isinstance(m, torch.nn.Dropout) and "lora_" not in name]


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny GPT-2 saved as an ordinary pretrained directory: it loads through `from_pretrained`,
    which returns a model in eval mode (unlike `from_config`)."""
    directory = tmp_path_factory.mktemp("pretrained")
    pretrained.load_model(TINY_GPT2).save_pretrained(directory)
    pretrained.load_tokenizer(TINY_GPT2).save_pretrained(directory)
    return directory


def test_every_load_path_builds_the_module_in_train_mode(pretrained_dir: Path, smollm2_dir: Path) -> None:
    sources: dict[str, dict[str, Any]] = {
        "random init (from_config)": {"base_model": TINY_GPT2},
        "local directory (from_pretrained)": {"base_model": str(pretrained_dir)},
        "GGUF (from_pretrained)": {"base_model": str(smollm2_dir), "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"},
    }
    for name, kwargs in sources.items():
        module = EmpatheticLoRAModule(**kwargs, num_generation_samples=0)
        in_eval = [n for n, m in module.named_modules() if not m.training]
        assert not in_eval, f"{name}: {in_eval[:3]}"


class _Recording(EmpatheticLoRAModule):
    """Records whether the base's dropout is active at each stage."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seen: dict[str, set[bool]] = {}

    def _record(self, stage: str) -> None:
        self.seen.setdefault(stage, set()).update(m.training for m in _base_dropouts(self.model))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self._record("train")
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._record("validate")
        super().validation_step(batch, batch_idx)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._record("test")
        super().test_step(batch, batch_idx)


def test_base_dropout_is_on_in_training_only(pretrained_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _Recording(base_model=str(pretrained_dir), num_generation_samples=2, generation_every_n_epochs=1,
                        generation={"max_new_tokens": 4})
    assert _base_dropouts(module.model), "the tiny GPT-2 has dropout layers to check"
    generate = reply_scoring.generate

    def recording_generate(model: torch.nn.Module, *args: Any) -> list[str]:
        module.seen.setdefault("generate", set()).update(m.training for m in _base_dropouts(model))
        return generate(model, *args)

    monkeypatch.setattr(reply_scoring, "generate", recording_generate)
    data = EmpatheticDialoguesDataModule(data_dir="builtin:sample", max_length=64, batch_size=4, eval_batch_size=4,
                                         max_examples=8, tokenizer=module.tokenizer)
    trainer = L.Trainer(max_steps=2, limit_val_batches=1, limit_test_batches=1, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, data)
    assert not [w for w in caught if "eval mode at the start of training" in str(w.message)]
    trainer.test(module, data)
    assert module.seen == {"train": {True}, "validate": {False}, "generate": {False}, "test": {False}}


def test_chat_loads_the_model_in_eval_mode(tiny_ckpt: Path) -> None:
    loaded = trained_model.load(tiny_ckpt, device="cpu")
    assert not [name for name, m in loaded.model.named_modules() if m.training]
