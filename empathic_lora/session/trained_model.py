"""Loading a trained model for inference, from whatever `train.py` or the exporter produced.

`--checkpoint` may name:

- a Lightning checkpoint (`last.ckpt`, `best-*.ckpt`): the base is rebuilt from the recorded
  hyperparameters (a `random_init` base from its seed, so to the very same weights) and the LoRA
  weights are loaded into the same `EmpatheticLoRAModule` that trained them;
- a run directory (`runs/quickstart`, or one `lightning_logs/version_N`): its newest `last.ckpt`;
- an exported adapter directory (standard PEFT files) or merged model directory, both written by
  `python -m empathic_lora.export` with an `empathic_lora.json` beside them.

Every path proves that the adapter really is in the model: the base's signature must equal the one
recorded at training time and the adapter weights must match the model's adapter slots one for one
(a merged model must match its own recorded signature). Nothing ever falls back to the untouched base.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from peft import PeftModel
from peft.utils import get_peft_model_state_dict
from safetensors import safe_open
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from empathic_lora.conversation import context_turns
from empathic_lora.errors import UserError
from empathic_lora.lm import adapted_model, checkpoint_file, emotion_classifier, pretrained

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]


@dataclass
class TrainedModel:
    """A model ready to generate, with what it was trained with."""

    model: PreTrainedModel  # a PeftModel (adapter applied on the fly) or a merged model; eval mode
    tokenizer: PreTrainedTokenizerBase
    data: dict[str, Any]  # the DataModule settings of the training run (format, history_turns, ...)
    source: Path  # the file or directory it was loaded from
    emotion_head: torch.nn.Linear | None = None  # trained with --model.emotion_loss_weight > 0

    def default_history_turns(self) -> int | None:
        """The context window the model was trained with (see `conversation.context_turns`)."""
        return context_turns(self.data)


def resolve(path: str | Path) -> Path:
    """The checkpoint file or exported directory that `--checkpoint` names (`checkpoint_file.resolve`)."""
    return checkpoint_file.resolve(path, "--checkpoint")


@contextlib.contextmanager
def _recorded_base(source: str | Path, recorded: str) -> Iterator[None]:
    """Says which base the source was trained on when that base cannot be loaded here."""
    try:
        yield
    except UserError as error:
        raise UserError(
            f"{error} ({source} was trained on {recorded!r}; --base_model DIR and --gguf_file FILE point at a local copy)"
        ) from None


# Hyperparameters of features added after the first checkpoints, and what their absence means.
OFF_WHEN_ABSENT = {"gguf_file": None, "random_init": False, "init_seed": 0, "peft": None, "dtype": "float32",
                   "emotion_loss_weight": 0.0, "quantize": "none"}
SHORTHAND = ("r", "alpha", "dropout", "bias", "target_modules")


def load_checkpoint(
    path: str | Path, base_model: str | None = None, gguf_file: str | None = None
) -> tuple[adapted_model.AdaptedModel, dict[str, Any]]:
    """The model a Lightning checkpoint trained (eval mode), and the checkpoint.

    The model is rebuilt from the recorded hyperparameters by the same steps training used
    (`adapted_model.build`), so the base (and a `random_init` base's weights) is the one it was
    trained on; `base_model`/`gguf_file` point at a local copy instead. Then the checkpoint is proven
    to fit (base signature, adapter keys one for one, emotion labels) before its weights are loaded.
    Lightning is not needed, so chat and serve do not import it.
    """
    ckpt = checkpoint_file.read(path)
    hparams = {**OFF_WHEN_ABSENT, **ckpt.get("hyper_parameters", {})}
    missing = [key for key in ("base_model", *SHORTHAND) if key not in hparams]
    if missing:
        raise UserError(f"checkpoint {path} records no {', '.join(missing)}: it was not written by train.py")
    recorded = hparams["base_model"]
    shorthand = {key: hparams[key] for key in SHORTHAND}
    with _recorded_base(path, recorded):
        adapted = adapted_model.build(
            base_model or recorded, gguf_file or hparams["gguf_file"], hparams["random_init"], hparams["init_seed"],
            hparams["dtype"], hparams["peft"], shorthand, shorthand, emotion_head=hparams["emotion_loss_weight"] > 0,
            quantize=hparams["quantize"],
        )
    checkpoint_file.check_fits(ckpt, adapted.base_signature, adapted.trainable_state_keys(), base_model or recorded)
    weights = ckpt["state_dict"]
    adapted.model.load_state_dict({k.removeprefix("model."): v for k, v in weights.items() if k.startswith("model.")},
                                  strict=False)  # the adapter's keys, proven complete just above
    if adapted.emotion_head is not None:
        adapted.emotion_head.load_state_dict(
            {k.removeprefix("emotion_head."): v for k, v in weights.items() if k.startswith("emotion_head.")})
        adapted.emotion_head.eval()
    adapted.model.eval()
    return adapted, ckpt


def _architecture(signature: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in signature.items() if k != "weights_sha256"}


def _load_adapter_dir(
    directory: Path, meta: dict[str, Any], base_model: str | None, gguf_file: str | None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The recorded base with the exported adapter, loaded the way plain PEFT users load it."""
    recorded = meta["base"]
    name, gguf = base_model or recorded["base_model"], gguf_file or recorded["gguf_file"]
    with _recorded_base(directory, recorded["base_model"]):
        tokenizer = pretrained.load_tokenizer(name, gguf)
        backbone = pretrained.load_model(name, gguf, recorded["random_init"], recorded["init_seed"], recorded.get("dtype", "float32"))
    for file in (checkpoint_file.ADAPTER_CONFIG, checkpoint_file.ADAPTER_WEIGHTS):
        if not (directory / file).is_file():
            raise UserError(f"{directory} has no {file}: the export is incomplete, export it again")
    # The architecture first, so that a wrong base is named rather than failing on tensor shapes;
    # the weights once the adapter is in (the signature covers the wrapped model's parameter names).
    checkpoint_file.check_base(
        _architecture(meta["signature"]), _architecture(pretrained.signature(backbone, tokenizer)), recorded["base_model"], name
    )
    try:
        model = PeftModel.from_pretrained(backbone, str(directory))
        slots = set(get_peft_model_state_dict(model))  # also reads the config's values
    except Exception as error:  # noqa: BLE001 - PEFT builds its config from the file's values unchecked, so a damaged
        # adapter_config.json fails in arbitrary ways (TypeError, AttributeError, ...; tests/session/test_trained_model_properties.py)
        lines = str(error).strip().splitlines() or [type(error).__name__]
        raise UserError(f"the adapter in {directory} is unreadable ({lines[0]})") from None
    checkpoint_file.check_base(meta["signature"], pretrained.signature(model, tokenizer), recorded["base_model"], name)
    with safe_open(str(directory / checkpoint_file.ADAPTER_WEIGHTS), framework="pt") as weights:
        found = set(weights.keys())
    checkpoint_file.check_adapter_keys(
        slots, found, f"the adapter in {directory}",
        "its adapter_config.json and adapter_model.safetensors come from different exports",
    )
    return model, tokenizer


def _load_merged_dir(directory: Path, meta: dict[str, Any]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A standalone model; its recorded signature proves these are the weights the export wrote."""
    tokenizer = pretrained.load_tokenizer(str(directory))
    model = pretrained.load_model(str(directory))
    if pretrained.signature(model, tokenizer) != meta["signature"]:
        raise UserError(f"the weights in {directory} are not those its export wrote (see {checkpoint_file.EXPORT_META}); export it again")
    return model, tokenizer


def pick_device(device: Device) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load(
    path: str | Path, base_model: str | None = None, gguf_file: str | None = None, device: Device = "auto"
) -> TrainedModel:
    """A model to chat with from a checkpoint, run directory or exported directory (see the module doc).

    Args:
        path: What `--checkpoint` names.
        base_model: A local copy of the recorded base model (a Lightning checkpoint or adapter directory).
        gguf_file: The GGUF file inside `base_model`, when the base is one.
        device: `auto` (CUDA when available), `cpu` or `cuda`.
    """
    target = pick_device(device)
    source = resolve(path)
    if source.is_dir():
        meta = checkpoint_file.read_export_meta(source)
        if meta.get("kind") == "merged":
            if base_model is not None or gguf_file is not None:
                raise UserError(f"--base_model/--gguf_file do not apply to {source}: it is a merged, standalone model")
            model, tokenizer = _load_merged_dir(source, meta)
        else:
            model, tokenizer = _load_adapter_dir(source, meta, base_model, gguf_file)
        data = meta.get("data", {})
        head = emotion_classifier.load_head(source, meta, model.config.hidden_size)
    else:
        adapted, ckpt = load_checkpoint(source, base_model, gguf_file)
        model, tokenizer, data = adapted.model, adapted.tokenizer, ckpt[checkpoint_file.META_KEY].get("data", {})
        head = adapted.emotion_head
    log.info("loaded %s", source)
    return TrainedModel(model.to(target).eval(), tokenizer, data, source, head.to(target).eval() if head is not None else None)
