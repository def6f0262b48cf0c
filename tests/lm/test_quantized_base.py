"""`--model.quantize nf4`: the frozen base in 4 bits (torchao's NF4Tensor) under a float adapter,
through training, checkpoint, chat and a merged export (tiny GPT-2, whose projections are Conv1D)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import run_main
from transformers import AutoModelForCausalLM
from transformers.pytorch_utils import Conv1D

from empathic_lora.chat import repl
from empathic_lora.conversation import MARKERS
from empathic_lora.export import exporter
from empathic_lora.lm import quantized_base
from empathic_lora.session import trained_model
from empathic_lora.train import cli
from empathic_lora.train.lora_module import EmpatheticLoRAModule

TINY = {"base_model": "builtin:tiny-gpt2", "random_init": True, "target_modules": ["c_attn"], "num_generation_samples": 0}


def _projections(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, (Conv1D, quantized_base.NF4Conv1D))}


def _batch(vocab: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, vocab, (4, 24), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :12] = -100  # the context: no label
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def test_nf4_base_holds_4_bit_weights_and_trains_only_the_adapter() -> None:
    torch.manual_seed(0)
    float_module = EmpatheticLoRAModule(**TINY)
    torch.manual_seed(0)
    module = EmpatheticLoRAModule(**TINY, quantize="nf4")
    projections = _projections(module.model)
    assert projections and all(isinstance(m, quantized_base.NF4Conv1D) for m in projections.values())
    assert all(quantized_base.is_quantized(m.weight) for m in projections.values())
    assert not quantized_base.is_quantized(module.model.get_output_embeddings().weight)  # head and embeddings: float
    batch = _batch(module.tokenizer.vocab_size)
    loss = module.training_step(batch, 0)
    loss.backward()
    trainable = {name: p for name, p in module.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    # LoRA's B starts at zero, so only B has a gradient at the first step, and A from the second.
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for name, p in trainable.items() if "lora_B" in name)
    optimizer = torch.optim.AdamW(trainable.values(), lr=1e-2)
    optimizer.step()
    optimizer.zero_grad()
    module.training_step(batch, 1).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for name, p in trainable.items() if "lora_A" in name)
    assert all(quantized_base.is_quantized(m.weight) for m in _projections(module.model).values())  # still 4-bit
    # The 4-bit base is the float base up to rounding: the loss moves, but little.
    float_loss = float_module.training_step(batch, 0).item()
    assert torch.isfinite(loss) and loss.item() != float_loss
    assert abs(loss.item() - float_loss) < 0.05 * float_loss


@pytest.fixture(scope="module")
def nf4_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nf4")
    result = run_main(cli.main, "fit", "--config", "configs/tiny.yaml", "--model.quantize", "nf4", "--trainer.max_steps", "3",
                      "--trainer.limit_val_batches", "1", "--model.num_generation_samples", "0",
                      "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root))
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"


def test_nf4_checkpoint_loads_for_chat_and_merges_into_a_float_model(
    nf4_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    loaded = trained_model.load(nf4_ckpt, device="cpu")
    assert all(quantized_base.is_quantized(m.weight) for m in _projections(loaded.model).values())  # rebuilt in 4 bits
    ids = loaded.tokenizer(f" {MARKERS[0]} I lost my keys {MARKERS[1]}", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = loaded.model(input_ids=ids).logits
    repl.main(["--checkpoint", str(nf4_ckpt), "--message", "I feel overwhelmed with work", "--device", "cpu"])
    (line,) = capsys.readouterr().out.splitlines()
    assert line.strip()
    merged = exporter.export(str(nf4_ckpt), str(tmp_path / "merged"), merge=True)
    model = AutoModelForCausalLM.from_pretrained(str(merged)).eval()
    projections = _projections(model)
    assert projections and all(type(m) is Conv1D and m.weight.dtype == torch.float32 for m in projections.values())
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, expected, atol=1e-4, rtol=1e-4)
