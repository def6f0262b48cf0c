"""Where things live on disk: the cache (built once, safely when several processes build the same
directory) and the run directories `train.py` writes (`ROOT/lightning_logs/version_N`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

RUNS = "lightning_logs"  # runs/version_N under default_root_dir, one per run: nothing is overwritten


def default_cache_dir() -> Path:
    return Path(os.environ.get("EMPATHIC_LORA_CACHE", Path.home() / ".cache" / "empathic_lora"))


def newest_run_file(root_dir: str | Path, pattern: str) -> Path | None:
    """The most recently written `ROOT/lightning_logs/version_*/PATTERN`: what a run root stands for."""
    candidates = sorted(Path(root_dir, RUNS).glob(f"version_*/{pattern}"), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def newest_checkpoint(root_dir: str | Path) -> Path | None:
    """The newest `last.ckpt` of any run under `root_dir` (`--ckpt_path last`, `chat.py --checkpoint ROOT`)."""
    return newest_run_file(root_dir, "checkpoints/last*.ckpt")


def publish(target: Path, build: Callable[[Path], None]) -> Path:
    """`target`, written by `build` into a staging directory of its own beside it, then renamed into
    place. Two processes (runs sharing a cache, parallel test workers) may build it at once: the
    first rename wins and the other's copy is dropped."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(staging)
        try:
            staging.replace(target)
        except OSError:  # another process published it first
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def cached_build(name: str, key: str, build: Callable[[Path], None], cache_dir: Path | None = None) -> Path:
    """`cache/builtin/NAME-KEY`: a model directory built by `build` on first use."""
    directory = (cache_dir or default_cache_dir()) / "builtin" / f"{name}-{key}"
    return directory if (directory / "config.json").is_file() else publish(directory, build)
