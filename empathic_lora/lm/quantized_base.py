"""The frozen base held in 4 bits (QLoRA's NF4) or 8 bits (int8), with the adapter in float on top.

QLoRA (PEFT's recipe) stores each frozen projection as 4-bit NormalFloat codes with per-block
scales and dequantizes a layer's weight only while that layer computes; only the adapter's weights
get gradients. PEFT does this with bitsandbytes, whose 4-bit kernels are CUDA-first; here it is
torchao's tensor subclasses, which run the same code on CPU and CUDA: `NF4Tensor` (what
torchtune's QLoRA uses; blocks of 32, see `BLOCK`) for `nf4`, `Int8Tensor` (one scale per output row, torchao's
weight-only int8) for `int8`. Quantization runs after the adapter is attached, so the base's
signature (checkpoint_file.check_fits) is the float base's, and a checkpoint rebuilds its base
the same way from its recorded `quantize`.

Each quantized projection is a `QuantizedLinear`, whose product runs through `_FrozenLinear`: the
weight is dequantized for the forward and again for the backward, and only the quantized weight
is kept in between. torchao's own `F.linear` for `Int8Tensor` is a plain `mm` on a float copy of
the weight, which autograd keeps for the backward: a float32 copy of every projection held until
the step's backward, more memory than the float base (tests/lm/test_quantized_base.py measures what
the backward keeps). The LM head and the embeddings stay in float (as in QLoRA): the head is tied
to the embeddings in many small models, and both are a lookup or a few positions' product, not the
bulk of the compute. GPT-2's projections are `Conv1D` (weight stored transposed); they are held
transposed like a linear layer's, and `dequantize` gives the `Conv1D` back, so a merged export has
the original architecture.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from transformers.pytorch_utils import Conv1D

from empathic_lora.errors import UserError

log = logging.getLogger(__name__)

Quantize = Literal["none", "nf4", "int8"]
# Weights per 4-bit block with its own scale. QLoRA's and torchao's default is 64; 32 is the block
# of GGUF's Q4_0/Q4_1/Q8_0 (and the sub-block of Q4_K/Q5_K), so a base read from a GGUF file is
# re-quantized one GGUF block per NF4 block. On SmolLM2's Q4_1 file, 64 raised the zero-shot
# validation perplexity 22% over the dequantized float base, 32 4% (docs/benchmarks.md), for an
# eighth of a bit more per weight.
BLOCK = 32
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


def _to_int8(weight: torch.Tensor) -> torch.Tensor:
    """The weight as an Int8Tensor, symmetric, one scale per output row (any shape fits)."""
    from torchao.quantization import Int8Tensor, PerRow

    return Int8Tensor.from_hp(weight.detach().contiguous(), PerRow())


QUANTIZERS: dict[str, Callable[[torch.Tensor], torch.Tensor | None]] = {"nf4": _to_nf4, "int8": _to_int8}


def is_quantized(weight: Any) -> bool:
    """Whether a parameter is held in one of torchao's quantized tensor subclasses."""
    return type(weight).__module__.startswith("torchao.")


def dequantized(weight: torch.Tensor) -> torch.Tensor:
    """A quantized weight back in float: NF4Tensor's `dequantize` is a static helper of another
    signature, so it has its own name for this."""
    return weight.get_original_weight() if hasattr(weight, "get_original_weight") else weight.dequantize()


class _FrozenLinear(torch.autograd.Function):
    """`x @ weight.T` for a frozen quantized weight, keeping only the quantized weight for the
    backward (torchao's `LinearNF4` for NF4 alone; see the module's docstring for int8)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight)
        return F.linear(x, dequantized(weight).to(x.dtype))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (weight,) = ctx.saved_tensors
        return grad @ dequantized(weight).to(grad.dtype), None


class QuantizedLinear(torch.nn.Module):
    """A frozen `Linear` or GPT-2 `Conv1D` with its weight quantized (as a linear layer's, out x in)."""

    def __init__(self, layer: torch.nn.Linear | Conv1D, weight: torch.Tensor) -> None:
        super().__init__()
        self.conv1d = isinstance(layer, Conv1D)
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.bias = layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _FrozenLinear.apply(x, self.weight)
        return y if self.bias is None else y + self.bias

    def to_float(self) -> torch.nn.Linear | Conv1D:
        """The layer it was made from, with the dequantized weight."""
        out_features, in_features = self.weight.shape
        weight = dequantized(self.weight)
        if self.conv1d:
            layer: torch.nn.Linear | Conv1D = Conv1D(out_features, in_features)
            weight = weight.t()
        else:
            layer = torch.nn.Linear(in_features, out_features, bias=self.bias is not None, device="meta")
        layer.weight = torch.nn.Parameter(weight.contiguous(), requires_grad=False)
        layer.bias = self.bias
        return layer


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
            weight = QUANTIZERS[quantize](child.weight.t() if isinstance(child, Conv1D) else child.weight)
            if weight is None:
                kept += 1
                continue
            quantized += 1
            setattr(parent, name, QuantizedLinear(child, weight))
    if not quantized:
        raise UserError(f"--model.quantize {quantize}: no frozen projection of this base divides into {BLOCK}-weight blocks")
    log.info("--model.quantize %s: %d frozen projections quantized (%d left in float: not a multiple of %d weights)",
             quantize, quantized, kept, BLOCK)
    _copy_out_of_the_file(model)
    _release_freed_memory()


def _copy_out_of_the_file(model: torch.nn.Module) -> None:
    """Copy the frozen float tensors left (embeddings, norms, biases) into memory of their own.
    transformers loads a safetensors base memory-mapped, and the file's mapping lives as long as
    any tensor read from it: with the embeddings still in it, every page of the float projections
    that quantizing read stayed resident (on SmolLM2, 513 MB of the file mapped in RSS after
    quantizing to 56 MB of NF4). Once nothing refers to the file, its mapping and those pages go."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if not tensor.requires_grad and not is_quantized(tensor):
                tensor.data = tensor.data.clone()


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
    """Every quantized projection of `model` back in float, in place, and GPT-2's `Conv1D`s as they
    were: before merging the adapter into the base (PEFT adds to the base's float weight)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, QuantizedLinear):
                setattr(parent, name, child.to_float())
