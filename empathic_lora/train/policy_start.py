"""`--model.init_from`: start training from another run's adapter (an SFT checkpoint, its run
directory, or its exported adapter), into this run's own adapter slots.

Here rather than through `session.trained_model` (which builds a whole new module): training
already holds the module, built from the same base, and only needs the adapter weights copied
into it, with the same proofs that they fit (base signature, adapter keys).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors import SafetensorError
from safetensors.torch import load_file

from empathic_lora.errors import UserError
from empathic_lora.lm import checkpoint_file

FLAG = "--model.init_from"
HINT = "it must have been trained with the same --model.r, --model.target_modules and --model.peft"


def load_adapter(module: Any, source: str) -> Path:
    """Copy the adapter weights of `source` into `module.model` (an `EmpatheticLoRAModule`); returns
    the file or directory read. Any misfit is a `UserError` that names the flag."""
    try:
        return _load_adapter(module, source)
    except UserError as error:
        message = str(error)
        raise UserError(message if message.startswith(FLAG) else f"{FLAG} {source}: {message}") from None


def _load_adapter(module: Any, source: str) -> Path:
    path = checkpoint_file.resolve(source, FLAG)
    if path.is_dir():
        meta = checkpoint_file.read_export_meta(path)
        if meta.get("kind") == "merged":
            raise UserError(f"{FLAG} {source} is a merged model, not an adapter: pass it as --model.base_model instead")
        checkpoint_file.check_base(meta["signature"], module.base_signature, meta["base"]["base_model"], module.hparams.base_model)
        try:
            weights = load_file(str(path / checkpoint_file.ADAPTER_WEIGHTS))
        except (OSError, SafetensorError) as error:
            raise UserError(f"{FLAG} {source}: the adapter is unreadable ({str(error).splitlines()[0]})") from None
        checkpoint_file.check_adapter_keys(set(get_peft_model_state_dict(module.model)), set(weights), "its adapter", HINT)
        set_peft_model_state_dict(module.model, weights)
        return path
    ckpt = checkpoint_file.read(path)
    recorded = ckpt["hyper_parameters"]["base_model"]
    checkpoint_file.check_base(ckpt[checkpoint_file.META_KEY]["signature"], module.base_signature, recorded, module.hparams.base_model)
    # The adapter only: an emotion head, if the source had one, is not part of the policy.
    found = {key: value for key, value in ckpt["state_dict"].items() if key.startswith("model.")}
    expected = {key for key in module.trainable_state_keys() if key.startswith("model.")}
    checkpoint_file.check_adapter_keys(expected, set(found), "its adapter", HINT)
    state = module.state_dict()
    misshapen = [key for key, value in found.items() if value.shape != state[key].shape]
    if misshapen:
        raise UserError(f"its adapter weight {misshapen[0]} has shape {tuple(found[misshapen[0]].shape)}, this model's "
                        f"{tuple(state[misshapen[0]].shape)}; {HINT}")
    with torch.no_grad():
        module.load_state_dict(found, strict=False)
    return path
