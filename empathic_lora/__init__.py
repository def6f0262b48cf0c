"""LoRA fine-tuning of small causal LMs on EmpatheticDialogues, with Lightning."""

__version__ = "0.1.0"
