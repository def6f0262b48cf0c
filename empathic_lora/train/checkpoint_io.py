"""Lightning's checkpoint I/O, through the project's one reader and writer of checkpoint files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.fabric.plugins import TorchCheckpointIO

from empathic_lora.lm import checkpoint_file


class SafeCheckpointIO(TorchCheckpointIO):
    """Every checkpoint Lightning writes (`last.ckpt`, top-k, periodic, `trainer.save_checkpoint`)
    is written atomically and never with NaN or inf values (`checkpoint_file.write`), and read only
    with `weights_only=True` (`checkpoint_file.read`)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        checkpoint_file.write(checkpoint, path)

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return checkpoint_file.read(path)
