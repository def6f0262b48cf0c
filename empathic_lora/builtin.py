"""What ships inside the package so the quickstart runs with no network and no `../shared`.

`builtin:sample` is a hand-written sample in the raw EmpatheticDialogues layout (see
`sample/README.md`). `builtin:tiny-gpt2` is a 2-layer GPT-2 with a byte-level BPE tokenizer
trained on that sample. Neither has pretrained weights, so the model is always `random_init`:
its files are built deterministically on first use into the cache and rebuilt identically
wherever a checkpoint made with it is loaded.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, PreTrainedTokenizerFast

from empathic_lora.conversation import MARKERS
from empathic_lora.download import default_cache_dir
from empathic_lora.parsing import read_split

SAMPLE = "builtin:sample"
TINY_GPT2 = "builtin:tiny-gpt2"
SAMPLE_DIR = Path(__file__).parent / "sample"
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
    key = f"{sample_hash.hexdigest()[:16]}-tokenizers{tokenizers.__version__}"
    directory = (cache_dir or default_cache_dir()) / "builtin" / f"tiny-gpt2-{key}"
    if not (directory / "config.json").is_file():
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tiny-gpt2-", dir=directory.parent))
        try:
            _build(staging)
            if not directory.exists():  # another process may have built it meanwhile
                staging.replace(directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return directory
