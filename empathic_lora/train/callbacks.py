"""Callbacks that make a long run safe to interrupt: what is checkpointed, when, and what never is.

- `ModelCheckpoint`: Lightning's, but `last.ckpt` always holds the newest state (after every
  validation, every `every_n_train_steps` optimizer steps and at the last `max_steps` step).
- `ExactResume`: a resumed run continues with the very random numbers and batches the
  uninterrupted run would have used, also from the middle of an epoch.
- `NonFiniteGuard`: a NaN/inf loss stops the run naming the step, before it reaches the
  weights; the fp16 grad scaler's skipped steps are counted, not treated as failures.

The CLI installs the last two on every run (`cli.py`); add them yourself to a plain `Trainer`.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint

from empathic_lora.errors import UserError
from empathic_lora.train import lightning_internals

log = logging.getLogger(__name__)


class ModelCheckpoint(LightningModelCheckpoint):
    """Lightning's `ModelCheckpoint` whose `last.ckpt` is always the newest training state.

    Lightning (2.6) rewrites `last.ckpt` only when it also saves a top-k checkpoint, so after a
    validation that does not improve the monitored metric `last.ckpt` silently stays behind;
    and its own `every_n_train_steps` would also judge the top-k on stale metrics between
    validations. Here the top-k are chosen after each validation as usual, and `last.ckpt` is
    rewritten after every validation, every `every_n_train_steps` optimizer steps, and at the
    last step of a `max_steps` run as the mid-epoch state it is (so that a resumed run finishes
    that epoch rather than skipping its rest). Every file goes through the trainer's checkpoint
    I/O, which the CLI makes atomic (`SafeCheckpointIO`).
    """

    def __init__(self, *args: Any, every_n_train_steps: int | None = None, **kwargs: Any) -> None:
        """Args:
        every_n_train_steps: Also rewrite `last.ckpt` every N optimizer steps, so that a crash costs
            at most N steps (`null`: only after each validation). The best-k checkpoints are still
            chosen after each validation, unlike with Lightning's argument of the same name.
        """
        if kwargs.get("save_last") == "link":
            # A link would point at the newest *top-k* file: an older state than the newest one.
            raise UserError("ModelCheckpoint save_last: link is not supported here; use save_last: true")
        if every_n_train_steps is not None and every_n_train_steps < 1:
            raise UserError(f"ModelCheckpoint every_n_train_steps must be >= 1 or null, got {every_n_train_steps}")
        super().__init__(*args, **kwargs)
        self.last_every_n_train_steps = every_n_train_steps
        self._refreshed_step = -1

    def _refresh_last(self, trainer: L.Trainer) -> None:
        """Write `last.ckpt` unless it already holds this step (or nothing may be saved now)."""
        step = trainer.global_step
        if not self.save_last or step in (lightning_internals.last_step_saved(self), self._refreshed_step):
            return
        if lightning_internals.should_skip_saving(self, trainer):  # sanity check, fast_dev_run, not fitting
            return
        saved = lightning_internals.last_step_saved(self)
        lightning_internals.save_last(self, trainer)
        # Lightning reads "saved at this step" as "top-k done" and would then skip its own top-k
        # check at this step (it runs at train-epoch end, after validation): keep its record.
        lightning_internals.set_last_step_saved(self, saved)
        self._refreshed_step = step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        every, step = self.last_every_n_train_steps, trainer.global_step
        # The last step of a max_steps run is saved here too, mid-epoch, before it stops (see
        # on_train_epoch_end).
        if (every and step % every == 0) or 0 < trainer.max_steps <= step:
            self._refresh_last(trainer)

    # After Lightning's own save, at the same point it saves: train-epoch end when validation runs
    # once per epoch (or not at all), validation end otherwise.
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not lightning_internals.saves_on_train_epoch_end(self, trainer):
            self._refresh_last(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        cut_short = trainer.fit_loop.epoch_loop.batch_progress.current.completed < trainer.num_training_batches
        if cut_short and self._refreshed_step == trainer.global_step:
            # Lightning counts an epoch cut short (max_steps) as finished here, so a run resumed
            # from a last.ckpt written now would skip the rest of the epoch: keep the mid-epoch one
            # written at this step's end. The top-k are still chosen.
            save_last, self.save_last = self.save_last, False
            try:
                super().on_train_epoch_end(trainer, pl_module)
            finally:
                self.save_last = save_last
            return
        super().on_train_epoch_end(trainer, pl_module)
        if lightning_internals.saves_on_train_epoch_end(self, trainer):
            self._refresh_last(trainer)


# -- exact resume ------------------------------------------------------------------------------
def _rng_state() -> dict[str, Any]:
    """This process's random state, in types that `torch.load(weights_only=True)` accepts."""
    name, key, position, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(key.astype(np.int64)), position, has_gauss, gauss),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, key, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), position, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ExactResume(L.Callback):
    """Resume mid-epoch exactly: random state per process, and the train loader's position.

    Lightning restores weights, optimizer, scheduler and loop counters, but not the random state
    that LoRA dropout draws from, so it is saved here (for every process: under DDP each rank's
    dropout differs) and set again just before the first resumed training step, after anything
    that runs in between (sanity validation, loader set-up) could have drawn from it.

    The train loader is stateful (`data.batch_order.ResumableDataLoader`) and Lightning saves its position,
    but Lightning 2.6 forgets to restore it when `configure_optimizers` asks for
    `trainer.estimated_stepping_batches` (as ours does for the LR schedule): that builds the
    loader before the checkpoint's loop state is read (Lightning issue #20550). Applying the
    saved loader state at `on_train_start`, before the first batch is drawn, closes that gap.
    """

    def __init__(self) -> None:
        self._pending: list[dict[str, Any]] | None = None

    def state_dict(self) -> dict[str, Any]:
        state = _rng_state()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            states: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(states, state)  # every rank saves at the same step
        else:
            states = [state]
        return {"rng": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict["rng"]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        lightning_internals.restore_train_loader_state(trainer)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._pending is None:
            return
        states, self._pending = self._pending, None
        if len(states) != trainer.world_size:
            log.warning(
                "the checkpoint was saved by %d process(es), this run has %d: dropout will not repeat the "
                "interrupted run's random numbers exactly", len(states), trainer.world_size,
            )
        _set_rng_state(states[trainer.global_rank % len(states)])


# -- non-finite values -------------------------------------------------------------------------
def _newest_checkpoint(trainer: L.Trainer) -> str | None:
    paths = [p for cb in trainer.checkpoint_callbacks for p in (cb.last_model_path, cb.best_model_path)]
    existing = [Path(p) for p in [*paths, trainer.ckpt_path] if p and Path(p).is_file()]
    return str(max(existing, key=lambda p: p.stat().st_mtime)) if existing else None


def _kept(trainer: L.Trainer) -> str:
    newest = _newest_checkpoint(trainer)
    return f"the last good checkpoint is kept: {newest}" if newest else "no checkpoint had been saved yet"


class NonFiniteGuard(L.Callback):
    """Stop on a NaN/inf training loss before it reaches the weights.

    The loss is checked before backward, so the weights in memory stay those of the last good
    step and the run ends with a one-line error naming the step. (Non-finite weights that a
    finite loss could still produce are refused at writing time by `SafeCheckpointIO`, so they
    never reach disk either.) With `16-mixed` the grad scaler skips steps whose gradients
    overflow and lowers its scale; that is normal, so such steps are only counted
    (`train/amp_skipped_steps`, cumulative).
    """

    def __init__(self) -> None:
        self.amp_skipped_steps = 0
        self._scale: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"amp_skipped_steps": self.amp_skipped_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.amp_skipped_steps = state_dict["amp_skipped_steps"]

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        # One host sync per step; all ranks decide together so that none is left waiting.
        finite = bool(torch.isfinite(loss.detach()).all())
        if trainer.strategy.reduce_boolean_decision(finite, all=True):
            return
        value = f"{loss.item()}" if not finite else "non-finite on another process"
        hint = " or train with --trainer.precision bf16-mixed or 32-true" if str(trainer.precision).startswith("16") else ""
        raise UserError(
            f"the training loss is {value} at step {trainer.global_step + 1} (epoch {trainer.current_epoch}); "
            f"training stopped before applying it and {_kept(trainer)}. Lower --model.lr{hint}"
        )

    def _scaler(self, trainer: L.Trainer) -> Any:
        return getattr(trainer.precision_plugin, "scaler", None)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        # Reading the scale syncs with the GPU, once before and once after the step: fp16 runs only.
        scaler = self._scaler(trainer)
        self._scale = scaler.get_scale() if scaler is not None and scaler.is_enabled() else None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        if self._scale is None:
            return
        # GradScaler lowers its scale exactly when it skips a step (inf/NaN gradients).
        if self._scaler(trainer).get_scale() < self._scale:
            self.amp_skipped_steps += 1
        pl_module.log("train/amp_skipped_steps", float(self.amp_skipped_steps), on_step=True, on_epoch=False)
