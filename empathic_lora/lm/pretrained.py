"""Loading the frozen base model and its tokenizer: from the Hub, a local directory, a GGUF file,
a builtin model, or fresh weights from a config (`random_init`)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Literal

import torch
from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.activations import NewGELUActivation

from empathic_lora.errors import UserError
from empathic_lora.lm import gguf_bases
from empathic_lora.lm.builtin_models import BUILTIN_MODELS, TINY_GPT2

log = logging.getLogger(__name__)

# The names of adapter parameters, left out of the base's signature: each PEFT tuner's prefix
# (`lora_`, `ia3_`, ...) and prompt tuning's learnt embeddings.
ADAPTER_PARAMETER_MARKERS = (*sorted({t.prefix for t in PEFT_TYPE_TO_TUNER_MAPPING.values() if getattr(t, "prefix", None)}), "prompt_encoder.")


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists()


def _source(base_model: str, gguf_file: str | None) -> tuple[str, dict[str, Any]]:
    """Where `from_pretrained` should look, with the keyword arguments every load shares."""
    kwargs: dict[str, Any] = {"trust_remote_code": False}  # a checkpoint or model dir never runs code
    if base_model in BUILTIN_MODELS:
        return str(BUILTIN_MODELS[base_model]()), kwargs
    if _looks_local(base_model):
        path = Path(base_model).expanduser()
        if not path.is_dir():
            raise UserError(f"--model.base_model {base_model} is not a directory")
        if gguf_file is not None:
            if not (path / gguf_file).is_file():
                raise UserError(f"--model.gguf_file {gguf_file} is not a file in {base_model}")
        elif not (path / "config.json").is_file():
            raise UserError(f"--model.base_model {base_model} has no config.json (for a GGUF model pass --model.gguf_file)")
        if gguf_file is not None:  # converted once; every later load of the file takes seconds
            return str(_load("GGUF file", base_model, lambda: gguf_bases.plain_directory(path / gguf_file))), kwargs
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file  # a Hub repository's GGUF file: transformers downloads and reads it
    return base_model, kwargs


def _load(what: str, base_model: str, load: Any) -> Any:
    try:
        return load()
    except (OSError, ValueError) as error:  # transformers raises both for unusable model files
        if _looks_local(base_model):
            raise UserError(f"could not load the {what} from {base_model}: {str(error).splitlines()[0]}") from None
        raise UserError(
            f"could not load the {what} of {base_model!r} from the Hugging Face Hub "
            f"({str(error).splitlines()[0]}); pass --model.base_model DIR pointing at a local copy"
        ) from None


def load_tokenizer(base_model: str, gguf_file: str | None = None) -> PreTrainedTokenizerBase:
    """The base model's tokenizer with pad = eos (causal LMs rarely have a pad token)."""
    source, kwargs = _source(base_model, gguf_file)
    tokenizer = _load("tokenizer", base_model, lambda: AutoTokenizer.from_pretrained(source, **kwargs))
    if tokenizer.eos_token is None:
        raise UserError(f"the tokenizer of {base_model} has no eos token to end replies with")
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DType = Literal["float32", "bfloat16", "float16"]


def load_model(
    base_model: str, gguf_file: str | None = None, random_init: bool = False, init_seed: int = 0, dtype: DType = "float32"
) -> PreTrainedModel:
    """The base model, its weights held in `dtype` (the Trainer's precision setting still decides
    autocast; PEFT keeps the adapter's own weights in float32).

    With `random_init` the weights are drawn from `init_seed` alone, so the same call rebuilds the
    very same model wherever a checkpoint is loaded.
    """
    source, kwargs = _source(base_model, gguf_file)
    if random_init or base_model == TINY_GPT2:
        config = _load("config", base_model, lambda: AutoConfig.from_pretrained(source, **kwargs))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, trust_remote_code=False)
        model.to(DTYPES[dtype])  # drawn in float32 first, so every dtype rounds the same weights
    else:
        model = _load(
            "model", base_model,
            lambda: AutoModelForCausalLM.from_pretrained(source, dtype=DTYPES[dtype], **kwargs),
        )
    model.config.pad_token_id = model.config.eos_token_id
    if gguf_file is not None:
        _forget_gguf_quantization(model)
    _fuse_tanh_gelu(model)
    return model


QUANTIZER_MARKS = ("hf_quantizer", "is_quantized", "quantization_method")  # what transformers reads to refuse saving


def _forget_gguf_quantization(model: PreTrainedModel) -> None:
    """A GGUF file is dequantized to ordinary float tensors on load, but transformers still marks the
    model as quantized, and so refuses to save it (`save_pretrained`: "quantized with gguf and is
    not serializable"). Nothing is quantized any more: drop the marks, so that a merged export is a
    plain float model that `AutoModelForCausalLM.from_pretrained(DIR)` loads.

    These marks are transformers internals with no public way to clear them (hence the version bound
    in pyproject.toml; `QUANTIZER_MARKS` is checked by tests/lm/test_pretrained.py)."""
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _fuse_tanh_gelu(model: torch.nn.Module) -> None:
    """Swap the GPT-2 family's `gelu_new` for torch's fused tanh-GELU: the same function (within
    3e-7), but `gelu_new` is five element-wise ops that each keep a tensor for backward. Those are
    about half of what distilgpt2's training step saves for backward (docs/benchmarks.md). The config
    still says `gelu_new`, so an exported model loads anywhere as the original architecture."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, NewGELUActivation):
                setattr(parent, name, torch.nn.GELU(approximate="tanh"))


def default_target_modules(model: PreTrainedModel) -> list[str]:
    """PEFT's own per-architecture LoRA targets (`c_attn` for GPT-2, `q_proj`/`v_proj` for Llama)."""
    targets = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model.config.model_type)
    if not targets:
        raise UserError(
            f"no default LoRA target modules are known for model type {model.config.model_type!r}; "
            f"pass --model.target_modules (linear layers here: {', '.join(linear_module_names(model))})"
        )
    return list(targets)


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """The distinct short names of the model's projection layers, the usual LoRA targets."""
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"
    }
    return sorted(names)


def signature(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """What a checkpoint's adapter depends on: architecture, vocabulary and (a sample of) weights.

    Two bases with the same signature give the same logits for the same adapter; comparing
    signatures is how a checkpoint proves it is loaded onto the base it was trained on.
    """
    config = model.config
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if any(marker in name for marker in ADAPTER_PARAMETER_MARKERS):
                continue
            digest.update(name.removeprefix("base_model.model.").encode())
            digest.update(parameter.detach().flatten()[:64].float().cpu().numpy().tobytes())
    return {
        "model_type": config.model_type,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "tokenizer_size": len(tokenizer),
        "weights_sha256": digest.hexdigest(),
    }
