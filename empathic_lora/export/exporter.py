"""`python -m empathic_lora.export --checkpoint CKPT --out DIR [--merge] [--force]`: hand a trained
adapter to anyone with transformers and peft.

Without `--merge`, DIR is a standard PEFT adapter directory (`adapter_config.json`,
`adapter_model.safetensors`) plus the tokenizer: `PeftModel.from_pretrained(base, DIR)`. With
`--merge`, the adapter is folded into the base (`merge_and_unload`) and DIR is a standalone model:
`AutoModelForCausalLM.from_pretrained(DIR)`; methods that add no weights (prompt tuning) cannot be
merged. A PiSSA adapter is written converted to a plain LoRA of the untouched base. Either way DIR also holds `empathic_lora.json`, what
`chat.py --checkpoint DIR` needs: the conversation-format settings, how to rebuild the base
(a `random_init` base has no weights anywhere: rebuild it with
`empathic_lora.lm.pretrained.load_model(**meta["base"])`), and the signature that proves the weights fit.
Both also hold what other serving stacks need (`prompt_files`): the tokenizer with this project's
chat template and a `generation_config.json` that stops where chat stops, and a model card
(`model_card`, README.md). A model trained with the emotion head also gets `emotion_head.safetensors` (a `torch.nn.Linear` on
the final hidden state at the response cue) and the label list under `emotions` in that file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from empathic_lora.conversation import context_turns
from empathic_lora.data import emotion_labels
from empathic_lora.errors import ArgumentParser, UserError, run_cli
from empathic_lora.export import model_card, prompt_files
from empathic_lora.lm import adapters, checkpoint_file, emotion_classifier, pretrained, quantized_base
from empathic_lora.session import trained_model

BASE_KEYS = ("base_model", "gguf_file", "random_init", "init_seed", "dtype")  # what rebuilds the base


def _previous_export_files(out: Path) -> list[Path]:
    """The files a previous export wrote into `out` (named in its empathic_lora.json), for --force."""
    try:
        names = json.loads((out / checkpoint_file.EXPORT_META).read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    # Plain names only: a crafted manifest must not reach outside `out`.
    return [out / name for name in names if isinstance(name, str) and name == Path(name).name and name not in ("", ".", "..")]


def export(
    checkpoint_path: str, out: str, merge: bool = False, force: bool = False,
    base_model: str | None = None, gguf_file: str | None = None,
) -> Path:
    """Write the adapter (or the merged model) of a Lightning checkpoint to `out`; returns `out`.

    Args:
        checkpoint_path: A .ckpt from train.py, or a run directory (its newest last.ckpt).
        out: The directory to write; it must be empty or missing unless `force`.
        merge: Fold the adapter into the base and write a standalone model.
        force: Write into a non-empty `out`: same-named files are replaced and the files of a
            previous export there are removed; nothing else in it is touched.
        base_model: A local copy of the recorded base model, for offline use.
        gguf_file: The GGUF file inside `base_model`, when the base is one.
    """
    source = trained_model.resolve(checkpoint_path)
    if source.is_dir():
        raise UserError(f"--checkpoint {source} is already an export; pass a .ckpt file or a run directory")
    target = Path(out).expanduser()
    if target.exists() and not target.is_dir():
        raise UserError(f"--out {target} is a file, not a directory")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise UserError(f"--out {target} is not empty; pass --force to write into it")
    trained, ckpt = trained_model.load_checkpoint(source, base_model, gguf_file)
    problem = adapters.merge_problem(trained.model) if merge else None
    if problem:
        raise UserError(f"--merge: {problem}; export without --merge for the adapter directory")
    recorded = ckpt["hyper_parameters"]
    meta: dict[str, Any] = {
        "format_version": checkpoint_file.FORMAT_VERSION,
        "kind": "merged" if merge else "adapter",
        "base": {key: recorded[key] for key in BASE_KEYS if key in recorded},
        "data": {k: v for k, v in ckpt[checkpoint_file.META_KEY].get("data", {}).items() if not k.startswith("_")},
        "checkpoint": str(source),
        "global_step": ckpt.get("global_step"),
    }
    target.mkdir(parents=True, exist_ok=True)
    # Written aside and moved in at the end: a failed export leaves `out` as it was.
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    try:
        if merge:
            quantized_base.dequantize(trained.model)  # PEFT merges into a float weight
            model = trained.model.merge_and_unload()
            model.save_pretrained(staging)
            meta["signature"] = pretrained.signature(model, trained.tokenizer)
        else:
            # Where plain PEFT users (AutoPeftModelForCausalLM) look for the base.
            trained.model.peft_config["default"].base_model_name_or_path = recorded["base_model"]
            adapters.save_pretrained(trained.model, staging, trained.initial_adapter)
            meta["signature"] = ckpt[checkpoint_file.META_KEY]["signature"]
        prompt_files.write(trained.tokenizer, context_turns(meta["data"]), staging)
        model_card.write(meta, source, staging, str(target))
        if trained.emotion_head is not None:
            emotion_classifier.save_head(trained.emotion_head, staging)
            meta["emotions"] = list(emotion_labels.EMOTIONS)
        meta["files"] = sorted([p.name for p in staging.iterdir()] + [checkpoint_file.EXPORT_META])
        checkpoint_file.write_export_meta(staging, meta)
        for old in _previous_export_files(target):
            if old.is_file():
                old.unlink()
        for path in sorted(staging.iterdir(), key=lambda p: p.name == checkpoint_file.EXPORT_META):  # the manifest last
            os.replace(path, target / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python -m empathic_lora.export", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, help="a .ckpt from train.py, or a run directory (its newest last.ckpt)")
    parser.add_argument("--out", required=True, help="the directory to write (empty or missing unless --force)")
    parser.add_argument("--merge", action="store_true", help="write a standalone model with the adapter merged in")
    parser.add_argument("--force", action="store_true", help="write into a non-empty --out, replacing a previous export")
    parser.add_argument("--base_model", help="local copy of the recorded base model (directory), for offline use")
    parser.add_argument("--gguf_file", help="the GGUF file inside --base_model, when the base is one")
    args = parser.parse_args(argv)

    def run() -> None:
        out = export(args.checkpoint, args.out, args.merge, args.force, args.base_model, args.gguf_file)
        how = "AutoModelForCausalLM.from_pretrained" if args.merge else "PeftModel.from_pretrained(base, ...)"
        print(f"wrote {'merged model' if args.merge else 'adapter'} to {out}: load it with {how} "
              f"or `python chat.py --checkpoint {out}`", file=sys.stderr)

    run_cli(run)


if __name__ == "__main__":
    main()
