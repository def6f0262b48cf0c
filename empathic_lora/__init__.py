"""LoRA fine-tuning of small causal LMs on EmpatheticDialogues, with Lightning."""

import logging

__version__ = "0.1.0"

# torchao (the `quantize` extra) tries to load its CUDA-only kernels whenever it is imported, which
# peft does in every process once torchao is installed, and warns for each one on a CPU machine;
# torch then warns about two of torchao's enums. Both are harmless, and would otherwise open the
# stderr of every chat, serve and train command.
for _noisy in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)
