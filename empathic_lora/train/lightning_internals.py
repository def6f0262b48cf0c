"""Every private Lightning API the project relies on, in one place.

`pyproject.toml` bounds lightning below its next minor version, and
`tests/train/test_lightning_internals.py` fails naming the internal that a new release removed.
Why no public API serves, each:

- `ModelCheckpoint._save_last_checkpoint`, `._monitor_candidates`, `._last_global_step_saved`,
  `._should_skip_saving_checkpoint`, `._should_save_on_train_epoch_end`: Lightning writes
  `last.ckpt` only together with a top-k decision; `callbacks.ModelCheckpoint` writes it on its own
  schedule and must leave Lightning's record of the top-k step as it was.
- `_FitLoop._load_combined_loader_states`: Lightning 2.6 skips restoring the train loader's
  position when `configure_optimizers` asks for `estimated_stepping_batches` (Lightning issue
  #20550); `callbacks.ExactResume` applies it itself.
- `LightningCLI._parse_ckpt_path` (overridden in `cli.py`) and `LightningCLI._get`: the CLI copies
  a checkpoint's hyperparameters over the parsed config there, with no hook before or after it to
  keep what the user typed; `_get` reads a subcommand's section of the config.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loops.fit_loop import _FitLoop

# What the tests check is still there: class -> private attributes used (instances' ones as "self.x").
USED: dict[type, tuple[str, ...]] = {
    ModelCheckpoint: (
        "_save_last_checkpoint", "_monitor_candidates", "_should_skip_saving_checkpoint",
        "_should_save_on_train_epoch_end", "self._last_global_step_saved",
    ),
    _FitLoop: ("_load_combined_loader_states",),
    LightningCLI: ("_parse_ckpt_path", "_get"),
}


def last_step_saved(callback: ModelCheckpoint) -> int:
    """The global step of the checkpoint Lightning considers written last (its top-k record)."""
    return callback._last_global_step_saved


def set_last_step_saved(callback: ModelCheckpoint, step: int) -> None:
    callback._last_global_step_saved = step


def should_skip_saving(callback: ModelCheckpoint, trainer: L.Trainer) -> bool:
    """Lightning's own rule: nothing is saved in a sanity check, a fast_dev_run or outside fit."""
    return callback._should_skip_saving_checkpoint(trainer)


def saves_on_train_epoch_end(callback: ModelCheckpoint, trainer: L.Trainer) -> bool:
    """Whether Lightning saves at train-epoch end (validation once per epoch or never) or at validation end."""
    return callback._should_save_on_train_epoch_end(trainer)


def save_last(callback: ModelCheckpoint, trainer: L.Trainer) -> None:
    """Write `last.ckpt` now, through the trainer's checkpoint I/O, as Lightning itself writes it."""
    callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))


def restore_train_loader_state(trainer: L.Trainer) -> None:
    """Apply the checkpoint's train loader state, if Lightning has not (a no-op when it has)."""
    trainer.fit_loop._load_combined_loader_states()


def config_section(cli: LightningCLI, name: str) -> dict[str, Any]:
    """The instantiated config's `name` section of the running subcommand (e.g. "trainer")."""
    return cli._get(cli.config_init, name, default={})
