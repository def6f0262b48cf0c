"""Where a `train.py fit` holds its memory: the peak and current RSS after each phase of one run.

    python bench/memory_phases.py --steps 10 -- --config configs/smollm2_cpu.yaml \
        --data.max_examples 400 --trainer.limit_val_batches 5

Everything after `--` goes to `train.py fit` as typed there: the run is the project's own CLI,
module and DataModule, built as `train.py` builds them. This script only adds a callback that
records memory at the phase boundaries, and wraps the three steps of the module's `__init__`
(base load, adapter wrap, the supervised-head probe) to record after each. It sets max_steps,
val_check_interval (validation once, after the steps) and a run directory of its own.

The kernel keeps one high-water mark per process (VmHWM) that cannot be reset, so each row shows
the running peak and the current RSS after the phase: a phase raised the peak when its peak is
above the row before. On CUDA the rows add torch's peak allocated memory since the last row
(reset at each row) and what is allocated now. One process per run: start it fresh so that its
peak is its own. Output: a Markdown table, then one JSON line.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
# Runnable from a checkout as `python bench/...`; the callback is imported by LightningCLI from
# this file's module name, so bench/ is importable too.
sys.path[1:1] = [str(BENCH.parent), str(BENCH)]
STARTED = time.perf_counter()

ROWS: list[dict[str, Any]] = []


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no {field} in /proc/self/status")


def mark(phase: str, **extra: Any) -> None:
    """One row: the running peak RSS, the current RSS and (CUDA) torch's peaks, after `phase`."""
    row: dict[str, Any] = {**extra, "phase": phase, "seconds": round(time.perf_counter() - STARTED, 1),
                           "peak_rss_mb": _status_mb("VmHWM"), "rss_mb": _status_mb("VmRSS")}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        row["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        row["cuda_now_mb"] = round(torch.cuda.memory_allocated() / 2**20, 1)
        torch.cuda.reset_peak_memory_stats()
    ROWS.append(row)
    print(json.dumps(row), file=sys.stderr, flush=True)


import lightning as L  # noqa: E402  (the first row, "imports", comes after it)


class PhaseMarks(L.Callback):
    """Marks the phases of `fit` that Lightning's hooks bound (see the module docstring)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.examples, self.first_step_end = 0, 0.0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        mark("data set-up")  # Lightning calls the DataModule's setup just before the callbacks'

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        mark("optimizer, loaders")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == 1:
            mark("first training step", examples=batch["input_ids"].shape[0])
            self.first_step_end = time.perf_counter()
        else:
            self.examples += batch["input_ids"].shape[0]
        if trainer.global_step == self.steps > 1:
            # Speed over steps 2..N: the first holds the epoch's longest batch (data/batch_order.py).
            rate = self.examples / (time.perf_counter() - self.first_step_end)
            mark(f"steady state ({self.steps} steps)", examples_per_s_after_first=round(rate, 3))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            ppl = trainer.callback_metrics.get("val/ppl")
            # ModelCheckpoint runs after every other callback: not yet written
            mark("validation", **({"val_ppl": round(float(ppl), 3)} if ppl is not None else {}))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        mark("checkpoint write")


def _mark_after(module: Any, name: str, phase: str) -> None:
    """Wrap `module.name` so that a row is recorded when it returns."""
    original = getattr(module, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        sys.modules["memory_phases"].mark(phase)
        return result

    setattr(module, name, wrapped)


def main(argv: list[str]) -> None:
    from empathic_lora.errors import ArgumentParser

    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="training steps (the first one is its own row)")
    parser.add_argument("fit_args", nargs="*", help="after --: train.py fit's flags")
    args = parser.parse_args(argv)
    from empathic_lora.lm import adapted_model
    from empathic_lora.train import cli

    mark("imports")
    # LightningCLI imports the callback as `memory_phases`, a second copy of this file beside
    # `__main__`: every row goes to that copy's list, so the table has one order.
    import memory_phases

    memory_phases.ROWS[:0], memory_phases.STARTED = ROWS, STARTED
    _mark_after(adapted_model, "load_base", "base load")
    _mark_after(adapted_model, "attach_adapter", "adapter wrap")
    _mark_after(adapted_model, "lm_head", "load-time probe")
    with tempfile.TemporaryDirectory() as root:
        callback = json.dumps({"class_path": "memory_phases.PhaseMarks", "init_args": {"steps": args.steps}})
        cli.main(["fit", *args.fit_args, "--trainer.max_steps", str(args.steps), "--trainer.val_check_interval", str(args.steps),
                  "--trainer.check_val_every_n_epoch", "null", "--trainer.num_sanity_val_steps", "0",
                  "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", root,
                  f"--trainer.callbacks+={callback}"])
    rows = memory_phases.ROWS
    cuda = any("cuda_peak_mb" in row for row in rows)
    header = "| phase | s | peak RSS MB | RSS now MB |" + (" CUDA peak MB | CUDA now MB |" if cuda else "")
    print(header)
    print("| --- | ---: | ---: | ---: |" + (" ---: | ---: |" if cuda else ""))
    for row in rows:
        cells = [row["phase"], row["seconds"], row["peak_rss_mb"], row["rss_mb"]]
        if cuda:
            cells += [row.get("cuda_peak_mb", ""), row.get("cuda_now_mb", "")]
        print("| " + " | ".join(map(str, cells)) + " |")
    print(json.dumps({"rows": rows, "fit_args": args.fit_args, "steps": args.steps}))


if __name__ == "__main__":
    from empathic_lora.errors import run_cli

    run_cli(lambda: main(sys.argv[1:]))
