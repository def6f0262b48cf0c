"""GGUF bases as plain transformers directories, converted once into the cache.

transformers reads a GGUF file on every `from_pretrained(gguf_file=...)`: it parses the
vocabulary and maps tensor names in Python, then dequantizes, once for the tokenizer and once more
for the model; for SmolLM2-135M that is about a minute on 2 CPU cores, paid again by every chat,
test and export. Saving the dequantized result once (float32 safetensors and the tokenizer's
files) makes every later load take seconds. The weights are exactly the GGUF's as
`from_pretrained` dequantizes them, so a checkpoint's base signature is the same either way.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from empathic_lora.paths import cached_build


def convert(gguf: Path, directory: Path) -> None:
    """Write the tokenizer and float32 weights of the GGUF file `gguf` as a transformers directory."""
    load = {"gguf_file": gguf.name, "trust_remote_code": False}
    AutoTokenizer.from_pretrained(gguf.parent, **load).save_pretrained(directory)
    dequantized = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **load)
    # transformers refuses to save a model it loaded from GGUF, though its weights are already
    # plain float32: move them into the same architecture built without the GGUF marker.
    config = dequantized.config
    del config.quantization_config
    with torch.device("meta"):  # no random init: every weight comes from the GGUF
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(dequantized.state_dict(), assign=True)
    plain.tie_weights()
    plain.save_pretrained(directory)


def plain_directory(gguf: Path, cache_dir: Path | None = None) -> Path:
    """The cached transformers directory of a local GGUF file, converted on first use. The key
    holds the file's path, size and modification time and the transformers version, so a changed
    file or a transformers that dequantizes differently is converted again."""
    stat = gguf.stat()
    identity = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return cached_build(f"gguf-{gguf.stem}", key, lambda directory: convert(gguf, directory), cache_dir)
