"""Checkpoint files: safe reading (`read`), atomic writing (`write`), the proof that an adapter fits
its base, and the export manifest's reader and writer.

A checkpoint holds only the LoRA weights plus plain hyperparameters, so it loads with
`torch.load(weights_only=True)`: a file from a stranger can never run code here.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from peft.utils import CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME

from empathic_lora.data.emotion_labels import check_labels
from empathic_lora.errors import UserError
from empathic_lora.paths import RUNS, newest_checkpoint

# Bump when what a checkpoint holds changes incompatibly; loading refuses other versions.
FORMAT_VERSION = 1
META_KEY = "empathic_lora"
# An exported directory: PEFT's own files (or a merged model's) plus this manifest, which says what
# the export holds and the base signature that proves the weights fit (written by export, read by
# session.trained_model).
EXPORT_META = "empathic_lora.json"
ADAPTER_CONFIG, ADAPTER_WEIGHTS = CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME


def read(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents, or a `UserError` naming the file and what is wrong with it."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"checkpoint {path} is a directory; pass a .ckpt file (e.g. {path}/checkpoints/last.ckpt)")
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise UserError(f"checkpoint {path} is an empty file")
    try:
        with warnings.catch_warnings():  # e.g. "unusual pickle protocol": the outcome is reported below
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message is long (and colored); its last "WeightsUnpickler error" says what was met.
        found = re.search(r"WeightsUnpickler error:\s*(.+)", str(error))
        reason = found.group(1).strip() if found else type(error).__name__
        code = re.search(r"Unsupported global: GLOBAL (\S+)", reason)
        if code:
            raise UserError(
                f"checkpoint {path} was refused: loading it would call {code.group(1)}, which could run code; "
                "only tensors and plain values are ever loaded (weights_only)"
            ) from None
        raise UserError(f"checkpoint {path} is truncated or not a checkpoint ({reason})") from None
    except Exception as error:  # noqa: BLE001 - torch's unpickler fails on arbitrary bytes in arbitrary ways
        lines = str(error).strip().splitlines()
        # A lookup error's text is only the key the unpickler tripped on (e.g. "101"): meaningless.
        reason = lines[0] if lines and not isinstance(error, LookupError) else "not a torch file"
        raise UserError(f"checkpoint {path} is truncated or not a checkpoint ({reason})") from None
    _check_layout(path, checkpoint)
    return checkpoint


def _check_layout(path: Path, checkpoint: Any) -> None:
    """Refuse a loadable file that is not one of our checkpoints before any key of it is used."""
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get(META_KEY), dict):
        raise UserError(f"{path} is not an empathic_lora checkpoint (no {META_KEY!r} section)")
    version = checkpoint[META_KEY].get("format_version")
    if version != FORMAT_VERSION:
        raise UserError(
            f"checkpoint {path} has format version {version}, this empathic_lora reads version {FORMAT_VERSION}"
        )
    expected = {"state_dict": dict, "hyper_parameters": dict}
    broken = [key for key, kind in expected.items() if not isinstance(checkpoint.get(key), kind)]
    if not isinstance(checkpoint[META_KEY].get("signature"), dict):
        broken.append(f"{META_KEY}.signature")
    elif not isinstance(checkpoint.get("hyper_parameters", {}).get("base_model"), str):
        broken.append("hyper_parameters.base_model")
    if broken:
        raise UserError(f"checkpoint {path} is damaged: {', '.join(broken)} missing or malformed; use another checkpoint")


def check_base(recorded: dict[str, Any], actual: dict[str, Any], recorded_name: str, actual_name: str) -> None:
    """Refuse an adapter on a base other than the one it was trained on, naming both."""
    keys = [k for k in recorded if k != "weights_sha256" and recorded[k] != actual.get(k)]
    if keys:
        details = ", ".join(f"{k} {recorded[k]} vs {actual.get(k)}" for k in keys)
        raise UserError(
            f"the checkpoint was trained on base model {recorded_name!r}, which differs from {actual_name!r} ({details})"
        )
    if recorded.get("weights_sha256") != actual.get("weights_sha256"):
        raise UserError(
            f"the checkpoint was trained on base model {recorded_name!r}, whose weights differ from those of "
            f"{actual_name!r}; pass the same base (and the same init_seed for random_init)"
        )


def check_adapter_keys(expected: set[str], found: set[str], what: str, hint: str) -> None:
    """Refuse an adapter whose weights do not fill the model's adapter slots one for one."""
    if expected != found:
        missing, extra = sorted(expected - found), sorted(found - expected)
        raise UserError(
            f"{what} does not fit this model: {len(missing)} adapter weight(s) missing (e.g. {missing[:1]}), "
            f"{len(extra)} unexpected (e.g. {extra[:1]}); {hint}"
        )


def check_fits(ckpt: dict[str, Any], signature: dict[str, Any], trainable_keys: set[str], base_name: str) -> None:
    """Refuse a checkpoint that does not fit the model built for it: another base (both named),
    adapter weights that do not fill its adapter slots one for one, or another emotion label list."""
    recorded = ckpt.get("hyper_parameters", {}).get("base_model", "?")
    check_base(ckpt[META_KEY]["signature"], signature, recorded, base_name)
    check_adapter_keys(
        trainable_keys, set(ckpt["state_dict"]), "the checkpoint's adapter",
        "check --model.r, --model.target_modules, --model.peft and --model.emotion_loss_weight against the run that made it",
    )
    check_labels(ckpt[META_KEY].get("emotions"), "the checkpoint")


def first_non_finite(tensors: Any, prefix: str = "") -> str | None:
    """The key path of the first floating tensor holding a NaN or inf in nested dicts/lists, if any."""
    if isinstance(tensors, torch.Tensor):
        return prefix if tensors.is_floating_point() and not bool(torch.isfinite(tensors).all()) else None
    if isinstance(tensors, dict):
        items: Any = tensors.items()
    elif isinstance(tensors, (list, tuple)):
        items = enumerate(tensors)
    else:
        return None
    for key, value in items:
        found = first_non_finite(value, f"{prefix}.{key}" if prefix else str(key))
        if found is not None:
            return found
    return None


def _fsync_directory(directory: Path) -> None:
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms that cannot open a directory (Windows) make renames durable themselves
        return
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def write(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Write a checkpoint atomically, refusing NaN or inf weights or optimizer state.

    Written in place, a kill during the write would leave a corrupt `last.ckpt`; here it goes to a
    temporary file in the same directory, fsynced, and is renamed. Every checkpoint training writes
    passes through here (`train/checkpoint_io.py`), so this is also where a non-finite value is
    stopped, leaving the file that was at `path` (the last good one) untouched.
    """
    path = Path(path)
    bad = first_non_finite({"state_dict": checkpoint.get("state_dict", {}),
                            "optimizer_states": checkpoint.get("optimizer_states", [])})
    if bad is not None:
        kept = f"the last good {path} is kept" if path.is_file() else f"{path} was not written"
        raise UserError(
            f"refusing to save a checkpoint at step {checkpoint.get('global_step')}: {bad} is not finite; {kept}. "
            "Lower --model.lr (with fp16, or train with --trainer.precision bf16-mixed or 32-true)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint is an ordinary file
    try:
        with os.fdopen(handle, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
        _fsync_directory(path.parent)  # the rename itself survives a power cut too
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_export_meta(directory: Path) -> dict[str, Any]:
    """The `EXPORT_META` manifest of an exported directory, checked; a `UserError` naming what is wrong."""
    path = directory / EXPORT_META
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path} is unreadable ({error}); export the checkpoint again") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"{path} is not an export of this empathic_lora (format version {FORMAT_VERSION} expected)"
        )
    missing = [key for key in ("kind", "base", "signature") if key not in meta]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}; export the checkpoint again")
    # Every value the loaders index, typed before any is used (found by tests/session/test_trained_model_properties.py).
    base = meta["base"] if isinstance(meta["base"], dict) else {}
    expected = [("kind", meta["kind"], str), ("base", meta["base"], dict), ("signature", meta["signature"], dict),
                ("data", meta.get("data", {}), dict), ("base.base_model", base.get("base_model"), str),
                ("base.gguf_file", base.get("gguf_file", ...), (str, type(None))),  # absent: `...`, never accepted
                ("base.random_init", base.get("random_init"), bool), ("base.init_seed", base.get("init_seed"), int)]
    broken = [key for key, value, kind in expected if not isinstance(value, kind)]
    if broken:
        raise UserError(f"{path} is damaged: {', '.join(broken)} missing or malformed; export the checkpoint again")
    return meta


def write_export_meta(directory: Path, meta: dict[str, Any]) -> None:
    """Write the `EXPORT_META` manifest that `read_export_meta` reads."""
    (directory / EXPORT_META).write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")


def resolve(path: str | Path, flag: str) -> Path:
    """The checkpoint file or exported directory that `path` names: a run root (e.g. runs/quickstart)
    or one `version_N` stands for its newest last.ckpt. A missing file is returned as it is, for `read`
    to name. `flag` names the option in errors."""
    path = Path(path).expanduser()
    if not path.is_dir() or (path / EXPORT_META).is_file():
        return path
    if (path / RUNS).is_dir():  # a run root such as runs/quickstart
        newest = newest_checkpoint(path)
        if newest is None:
            raise UserError(f"{flag} {path}: no {RUNS}/version_*/checkpoints/last.ckpt under it yet")
        return newest
    last = sorted((path / "checkpoints").glob("last*.ckpt"), key=lambda p: p.stat().st_mtime)  # one version_N
    if last:
        return last[-1]
    raise UserError(
        f"{flag} {path} is a directory but neither a run directory (no {RUNS}/ or checkpoints/last.ckpt) "
        f"nor an exported model (no {EXPORT_META}); pass a .ckpt file or a directory written by train.py or export"
    )
