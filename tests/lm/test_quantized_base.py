"""`--model.quantize nf4` and `int8`: the frozen base in 4 or 8 bits (torchao's NF4Tensor and
Int8Tensor) under a float adapter, through training, checkpoint, chat and a merged export (tiny
GPT-2, whose projections are Conv1D)."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch
from conftest import run_main
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel
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
    return {name: m for name, m in model.named_modules() if isinstance(m, (Conv1D, quantized_base.QuantizedLinear))}


def _batch(vocab: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, vocab, (4, 24), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :12] = -100  # the context: no label
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


@pytest.mark.parametrize("quantize", ["nf4", "int8"])
def test_quantized_base_holds_quantized_weights_and_trains_only_the_adapter(quantize: str) -> None:
    torch.manual_seed(0)
    float_module = EmpatheticLoRAModule(**TINY)
    torch.manual_seed(0)
    module = EmpatheticLoRAModule(**TINY, quantize=quantize)
    projections = _projections(module.model)
    assert projections and all(isinstance(m, quantized_base.QuantizedLinear) for m in projections.values())
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
    assert all(quantized_base.is_quantized(m.weight) for m in _projections(module.model).values())  # still quantized
    # The quantized base is the float base up to rounding: the loss moves, but little.
    float_loss = float_module.training_step(batch, 0).item()
    assert torch.isfinite(loss) and loss.item() != float_loss
    assert abs(loss.item() - float_loss) < 0.05 * float_loss


@pytest.mark.parametrize("quantize", ["nf4", "int8"])
def test_backward_keeps_the_quantized_weight_not_a_float_copy(quantize: str) -> None:
    """torchao's own int8 `F.linear` multiplies by a float copy of the weight, which autograd would
    keep for the backward: a float32 copy of every projection alive until the step's backward."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(128, 192).requires_grad_(False)
    quantized = quantized_base.QuantizedLinear(layer, quantized_base.QUANTIZERS[quantize](layer.weight))
    weight = quantized_base.dequantized(quantized.weight)
    torch.testing.assert_close(weight, layer.weight, atol=0.05, rtol=0)  # the same weight, rounded
    kept: list[torch.Tensor] = []
    x = torch.randn(3, 5, 128, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        y = quantized(x)
    float_bytes = sum(t.numel() * t.element_size() for t in kept if not quantized_base.is_quantized(t))
    assert float_bytes < layer.weight.numel() * 4 // 10  # no float copy of the weight (4 bytes each)
    assert any(quantized_base.is_quantized(t) for t in kept)
    grad = torch.randn_like(y)
    y.backward(grad)
    torch.testing.assert_close(y, torch.nn.functional.linear(x, weight, layer.bias))
    torch.testing.assert_close(x.grad, grad @ weight)


@pytest.fixture(scope="module", params=["nf4", "int8"])
def quantized_ckpt(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp(request.param)
    result = run_main(cli.main, "fit", "--config", "configs/tiny.yaml", "--model.quantize", request.param, "--trainer.max_steps", "3",
                      "--trainer.limit_val_batches", "1", "--model.num_generation_samples", "0",
                      "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root))
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"


def test_quantized_checkpoint_loads_for_chat_and_merges_into_a_float_model(
    quantized_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    loaded = trained_model.load(quantized_ckpt, device="cpu")
    projections = _projections(loaded.model)
    assert projections and all(quantized_base.is_quantized(m.weight) for m in projections.values())  # rebuilt quantized
    ids = loaded.tokenizer(f" {MARKERS[0]} I lost my keys {MARKERS[1]}", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = loaded.model(input_ids=ids).logits
    repl.main(["--checkpoint", str(quantized_ckpt), "--message", "I feel overwhelmed with work", "--device", "cpu"])
    (line,) = capsys.readouterr().out.splitlines()
    assert line.strip()
    merged = exporter.export(str(quantized_ckpt), str(tmp_path / "merged"), merge=True)
    model = AutoModelForCausalLM.from_pretrained(str(merged)).eval()
    projections = _projections(model)
    assert projections and all(type(m) is Conv1D and m.weight.dtype == torch.float32 for m in projections.values())
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, expected, atol=1e-4, rtol=1e-4)


def test_quantizing_lets_go_of_the_base_file(tmp_path: Path) -> None:
    """transformers maps a safetensors base into memory; once quantized, nothing may refer to the
    file any more, or the float projections' pages that quantizing read stay resident."""
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=64, n_head=2, vocab_size=128, n_positions=32)).save_pretrained(tmp_path)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tmp_path), LoraConfig(r=2, target_modules=["c_attn"]))

    def mapped() -> bool:
        return str(tmp_path / "model.safetensors") in Path("/proc/self/maps").read_text()

    assert mapped()  # the premise: the base is read through a mapping of its file
    quantized_base.quantize_base(model, "nf4")
    gc.collect()
    assert not mapped()
    assert all(quantized_base.is_quantized(m.weight) for m in _projections(model).values())
