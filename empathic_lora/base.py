"""Kept because exports' docs and notebooks call `empathic_lora.base.load_model(**meta["base"])`."""

from empathic_lora.lm.pretrained import load_model, load_tokenizer  # noqa: F401
