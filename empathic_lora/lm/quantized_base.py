"""The frozen base held in 4 bits (QLoRA's NF4), with the adapter in float on top.

QLoRA (PEFT's recipe) stores each frozen projection as 4-bit NormalFloat codes with per-block
scales and dequantizes a layer's weight only while that layer computes; only the adapter's weights
get gradients. PEFT does this with bitsandbytes, whose 4-bit kernels are CUDA-first; here it is
torchao's `NF4Tensor` (what torchtune's QLoRA uses), a tensor subclass that runs the same code on
CPU and CUDA: `F.linear` on it dequantizes the weight for that call, and its backward keeps the
4-bit weight, not a float copy. Quantization runs after the adapter is attached, so the base's
signature (checkpoint_file.check_fits) is the float base's, and a checkpoint rebuilds its base
the same way from its recorded `quantize`.

The LM head and the embeddings stay in float (as in QLoRA): the head is tied to the embeddings
in many small models, and both are a lookup or a few positions' product, not the bulk of the
compute. GPT-2's projections are `Conv1D` (weight stored transposed, applied with `addmm`, which
NF4Tensor does not implement); each is held as an `NF4Conv1D`, a linear layer over the transposed
weight, and `dequantize` gives the `Conv1D` back, so a merged export has the original architecture.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any, Literal

import torch
import torch.nn.functional as F
from transformers.pytorch_utils import Conv1D

from empathic_lora.errors import UserError

log = logging.getLogger(__name__)

Quantize = Literal["none", "nf4"]
BLOCK = 64  # weights per 4-bit block with its own scale (QLoRA's and torchao's default)
SCALER_BLOCK = 256  # scales per block of the second (8-bit) quantization of the scales, at most


def _to_nf4(weight: torch.Tensor) -> torch.Tensor | None:
    """The weight as an NF4Tensor, or None where its size does not divide into blocks. torchao
    wants the number of scales to divide into scale blocks too: the largest block up to 256 that
    does (576 x 576 gives 5,184 scales, blocks of 192)."""
    from torchao.quantization import to_nf4

    if weight.numel() % BLOCK:
        return None
    scales = weight.numel() // BLOCK
    scaler_block = max(size for size in range(1, SCALER_BLOCK + 1) if scales % size == 0)
    return to_nf4(weight.detach().contiguous(), BLOCK, scaler_block)


def is_quantized(weight: Any) -> bool:
    """Whether a parameter is held in NF4 (torchao's `NF4Tensor`, known by its dequantizer)."""
    return hasattr(weight, "get_original_weight")


class NF4Conv1D(torch.nn.Module):
    """A frozen GPT-2 `Conv1D` as a linear layer over its transposed weight, held in NF4."""

    def __init__(self, conv: Conv1D, weight: torch.Tensor) -> None:
        super().__init__()
        self.nf = conv.nf
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.bias = conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def to_conv1d(self) -> Conv1D:
        conv = Conv1D(self.nf, self.weight.shape[1])
        conv.weight = torch.nn.Parameter(self.weight.get_original_weight().t().contiguous(), requires_grad=False)
        conv.bias = self.bias
        return conv


def quantize_base(model: torch.nn.Module, quantize: Quantize) -> None:
    """Hold every frozen projection of `model` (a base under its adapter) in `quantize`, in place.
    Trainable weights (the adapter's), the embeddings and the LM head stay as they are."""
    if quantize == "none":
        return
    try:
        import torchao  # noqa: F401  (an optional dependency: the extra `quantize`)
    except ModuleNotFoundError:
        raise UserError(f"--model.quantize {quantize} needs torchao: pip install 'empathic_lora[quantize]'") from None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    kept = quantized = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if child is head or not isinstance(child, (torch.nn.Linear, Conv1D)) or child.weight.requires_grad:
                continue
            weight = child.weight.t() if isinstance(child, Conv1D) else child.weight
            nf4 = _to_nf4(weight)
            if nf4 is None:
                kept += 1
                continue
            quantized += 1
            if isinstance(child, Conv1D):
                setattr(parent, name, NF4Conv1D(child, nf4))
            else:
                child.weight = torch.nn.Parameter(nf4, requires_grad=False)
    if not quantized:
        raise UserError(f"--model.quantize {quantize}: no frozen projection of this base divides into {BLOCK}-weight blocks")
    log.info("--model.quantize %s: %d frozen projections held in 4 bits (%d left in float: not a multiple of %d weights)",
             quantize, quantized, kept, BLOCK)
    _release_freed_memory()


def _release_freed_memory() -> None:
    """Hand the quantization's freed scratch memory back to the system. torchao quantizes in
    chunks whose temporaries glibc serves from its heap once its mmap threshold has risen, and
    keeps them after they are freed: on SmolLM2 the RSS after quantizing was 2.14 GB, 1.21 GB with
    a fixed threshold (docs/benchmarks.md, Memory). `malloc_trim` is glibc's; elsewhere the
    allocator decides."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def dequantize(model: torch.nn.Module) -> None:
    """Every NF4 weight of `model` back in float, in place, and GPT-2's `Conv1D`s as they were:
    before merging the adapter into the base (PEFT adds to the base's float weight)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, NF4Conv1D):
                setattr(parent, name, child.to_conv1d())
            elif isinstance(child, torch.nn.Linear) and is_quantized(child.weight):
                child.weight = torch.nn.Parameter(child.weight.get_original_weight(), requires_grad=False)
