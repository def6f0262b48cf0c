"""Directories built once into the cache, safely when several processes build the same one."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from empathic_lora.download import default_cache_dir


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
