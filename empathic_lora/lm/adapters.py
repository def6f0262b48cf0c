"""Which PEFT adapter a run trains, and what each kind needs from the rest of the code.

`--model.peft` takes any `peft.PeftConfig` subclass as `class_path`/`init_args` (LoRA and its
DoRA, rsLoRA and PiSSA variants, IA3, prompt tuning, ...). Left unset, the flat LoRA flags
(`--model.r`, `alpha`, `dropout`, `bias`, `target_modules`) build the default `LoraConfig`, as
before. The two never mix: with `--model.peft` set, a flat flag changed from its default is an
error naming both, so every adapter setting has exactly one place (see `resolve`).

Some methods need care elsewhere: PiSSA (and OLoRA, CorDA) rewrites the base's weights when the
adapter is initialised (`mutates_base`), prompt tuning prepends virtual tokens inside PEFT's own
forward (`prepends_virtual_tokens`), and only methods that change weights can be merged
(`merge_problem`).
"""

from __future__ import annotations

import dataclasses
import enum
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model
from safetensors.torch import save_file

from empathic_lora.errors import UserError
from empathic_lora.lm import checkpoint_file, pretrained

# jsonargparse fills every dataclass default, so LoftQ's defaults always look "specified" to
# LoraConfig, which then warns on every LoRA run that they are ignored (they are: no LoftQ here).
warnings.filterwarnings("ignore", message="`loftq_config` specified but will be ignored")

# The flat flags are a shorthand for these LoraConfig fields.
SHORTHAND_FIELDS = {"r": "r", "alpha": "lora_alpha", "dropout": "lora_dropout", "bias": "bias", "target_modules": "target_modules"}
TASK_TYPE = "CAUSAL_LM"
# Initialisations that rewrite the base layer's weights (W -> W - BA) instead of starting at BA = 0.
BASE_MUTATING_INITS = ("pissa", "olora", "corda")


def resolve(peft: PeftConfig | dict[str, Any] | None, shorthand: dict[str, Any], defaults: dict[str, Any]) -> PeftConfig:
    """The run's adapter config: `peft` (an object, or the `class_path`/`init_args` dict a checkpoint
    records), or else the default LoRA built from the flat `shorthand` flags; `task_type` CAUSAL_LM.

    Raises a `UserError` when `peft` is given and a shorthand flag differs from its default in
    `defaults`: which of the two should win would be a guess.
    """
    if peft is None:
        return LoraConfig(
            r=shorthand["r"], lora_alpha=shorthand["alpha"], lora_dropout=shorthand["dropout"], bias=shorthand["bias"],
            target_modules=shorthand["target_modules"], task_type=TASK_TYPE,
        )
    config = from_hparam(peft) if isinstance(peft, dict) else peft
    changed = [name for name, value in shorthand.items() if value != defaults[name]]
    if changed:
        name = changed[0]
        raise UserError(
            f"--model.{name} {shorthand[name]} and --model.peft ({type(config).__name__}) both set the adapter: with "
            f"--model.peft, set {SHORTHAND_FIELDS[name]} in its init_args and leave --model.{name} at {defaults[name]}"
        )
    if config.task_type is None:
        config = dataclasses.replace(config, task_type=TASK_TYPE)
    elif config.task_type != TASK_TYPE:
        raise UserError(f"--model.peft task_type {config.task_type}: this trains a causal LM, so it must be {TASK_TYPE} (or unset)")
    return config


def _peft_config_parser() -> Any:
    # Imported here: only methods other than the flat LoRA need it, and chat and serve load LoRA
    # checkpoints without paying for jsonargparse's import.
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--peft", type=PeftConfig)
    return parser


def from_hparam(value: dict[str, Any]) -> PeftConfig:
    """The config a checkpoint's `class_path`/`init_args` dict records, built by jsonargparse as the
    command line built it. Only `peft`'s own classes: a checkpoint must not name code to run."""
    class_path = value.get("class_path") if isinstance(value, dict) else None
    if not isinstance(class_path, str) or not class_path.startswith("peft."):
        raise UserError(f"--model.peft {value}: expected class_path naming a peft.PeftConfig subclass, e.g. peft.LoraConfig")
    parser = _peft_config_parser()
    try:
        return parser.instantiate(parser.parse_object({"peft": value})).peft
    except Exception as error:  # noqa: BLE001 - jsonargparse and the config's own checks raise many kinds
        raise UserError(f"--model.peft {class_path}: {' '.join(str(error).split())[:300]}") from None


def _plain(value: Any) -> Any:
    """Only what `torch.load(weights_only=True)` reads back: no enums, sets or dataclasses."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if dataclasses.is_dataclass(value):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def as_hparam(config: PeftConfig) -> dict[str, Any]:
    """`config` as the `class_path`/`init_args` dict that LightningCLI records and `from_hparam` reads."""
    defaults = type(config)()
    init_args = {
        field.name: _plain(getattr(config, field.name))
        for field in dataclasses.fields(config)
        if field.init and getattr(config, field.name) != getattr(defaults, field.name)
    }
    return {"class_path": f"peft.{type(config).__name__}", "init_args": init_args}


def mutates_base(config: PeftConfig) -> bool:
    """PiSSA, OLoRA and CorDA start from W - BA with BA the top of W: the base layer's weights change."""
    return str(getattr(config, "init_lora_weights", "")).lower().startswith(BASE_MUTATING_INITS)


def prepends_virtual_tokens(model: PeftModel) -> bool:
    """Prompt tuning and its kin: PEFT's forward puts learnt embeddings before the input."""
    return model.active_peft_config.is_prompt_learning


def virtual_tokens(model: torch.nn.Module) -> int:
    """How many positions of the context window the adapter's virtual tokens take (0 for most methods)."""
    config = getattr(model, "active_peft_config", None)
    return int(getattr(config, "num_virtual_tokens", 0) or 0) if config is not None and config.is_prompt_learning else 0


def merge_problem(model: PeftModel) -> str | None:
    """Why the adapter cannot be folded into the base weights, or None when it can."""
    config = model.active_peft_config
    if config.is_prompt_learning:
        return f"{config.peft_type.value} adds learnt virtual tokens, not weights, so there is nothing to merge into the base"
    if not hasattr(model.base_model, "merge_and_unload"):
        return f"peft cannot merge a {config.peft_type.value} adapter"
    return None


def wrap(
    backbone: torch.nn.Module, config: PeftConfig, fingerprint: Callable[[torch.nn.Module], dict[str, Any]], flag: str
) -> tuple[PeftModel, dict[str, Any]]:
    """The base with the adapter, and `fingerprint` of the wrapped model before any adapter
    initialisation rewrote the base's weights.

    A checkpoint proves it fits its base through that fingerprint. PiSSA's SVD differs in the last
    bits with the number of threads (or the device), so a fingerprint of the rewritten weights would
    refuse the same base elsewhere; the weights as loaded do not change. `flag` names where the
    target modules were set, for the error when they match nothing.
    """
    try:
        if mutates_base(config):
            probe = get_peft_model(backbone, dataclasses.replace(config, init_lora_weights=True))
            signature = fingerprint(probe)
            backbone = probe.unload()
            model = get_peft_model(backbone, config)
        else:
            model = get_peft_model(backbone, config)
            signature = fingerprint(model)
    except ValueError as error:
        text = str(error)
        if "not found in the base model" in text or "specify `target_modules`" in text:
            targets = getattr(config, "target_modules", None)
            targets = sorted(targets) if isinstance(targets, (set, frozenset)) else targets  # PEFT keeps a list as a set
            raise UserError(
                f"{flag} {targets} match no module of the base model; "
                f"its projection layers are: {', '.join(pretrained.linear_module_names(backbone))}"
            ) from None
        raise UserError(f"--model.peft {type(config).__name__}: {' '.join(text.split())[:300]}") from None
    return model, signature


def save_pretrained(model: PeftModel, directory: str | Path, initial: dict[str, torch.Tensor] | None) -> None:
    """PEFT's adapter files for `model`. An adapter whose initialisation rewrote the base (PiSSA;
    `initial` holds its weights before training) is written as PEFT's conversion to a plain LoRA
    of the untouched base (rank 2r: the trained factors beside the negated initial ones), so that
    `PeftModel.from_pretrained(base, directory)` needs no SVD and gives the trained model."""
    if initial is None:
        model.save_pretrained(str(directory))
        return
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "initial"
        path.mkdir()
        save_file({k: v.contiguous() for k, v in initial.items()}, str(path / checkpoint_file.ADAPTER_WEIGHTS))
        model.save_pretrained(str(directory), path_initial_model_for_weight_conversion=str(path))
