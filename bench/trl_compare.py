"""Training memory and speed of the project against TRL's `SFTTrainer`, side by side.

    python bench/trl_compare.py --model ../shared/models/smollm2-135m-instruct-gguf \
        --gguf-file SmolLM2-135M-Instruct.Q4_1.gguf --data-dir ../shared/data/empatheticdialogues \
        --examples 30 --threads 1

The work is the worst batch on purpose: one epoch over the listener turns of the train split's
conversations with the longest examples (whole conversations, longest first, until `--examples`
are in), so both sides meet their largest batch. Both train the same tokens: the project's own
tokenization (`--data.max_length`, context cut from the left) is handed to TRL pre-tokenized,
with a `completion_mask` over the reply and its eos (TRL's completion-only loss). Same base
(float32), LoRA r 8 / alpha 32 / dropout 0.05 on q_proj and v_proj, batch 8, lr 3e-4, gradient
clipping 1.0, one epoch; everything else as each side ships it (TRL's defaults include gradient
checkpointing, the project's do not).

The project side is `train.py fit --config configs/smollm2_cpu.yaml` on a data directory holding
only those conversations (its CLI, module, DataModule and sampler, no validation). Each side runs
in its own freshly spawned process, both at the same time with `--threads` threads each, so both
see the same machine load; the peak RSS is each process's own (ru_maxrss). Examples/s counts the
training loop only (from the trainer's train start to its end). Output: one JSON line per side,
then one line of project / TRL ratios.
"""

from __future__ import annotations

import json
import multiprocessing
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Runnable from a checkout as `python bench/...`; LightningCLI imports the project side's clock
# from this file's module name, so bench/ is importable too.
sys.path[1:1] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
import lightning as L  # noqa: E402

from empathic_lora.errors import ArgumentParser, UserError, run_cli  # noqa: E402

LORA = {"r": 8, "alpha": 32, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}
BATCH, LR, MAX_LENGTH = 8, 3e-4, 256


CLOCK: dict[str, float] = {}  # the project side's, filled by ProjectClock in its process


class ProjectClock(L.Callback):
    """The project's training loop time and examples, from train start to train end."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        CLOCK["start"] = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        CLOCK["seconds"] = time.perf_counter() - CLOCK["start"]
        CLOCK["examples"] = len(trainer.datamodule.datasets["train"])


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def worst_batch_set(model: str, gguf_file: str | None, data_dir: str, examples: int, out: Path) -> list[dict[str, Any]]:
    """Write `out` as a raw data directory holding the conversations with the longest examples
    (train.csv; valid/test copied), and return their tokenized examples as the project builds them."""
    from empathic_lora.data.datamodule import EmpatheticDialoguesDataModule
    from empathic_lora.data.download import SPLIT_FILES
    from empathic_lora.lm import pretrained

    tokenizer = pretrained.load_tokenizer(model, gguf_file)
    data = EmpatheticDialoguesDataModule(data_dir=data_dir, max_length=MAX_LENGTH, tokenizer=tokenizer)
    data.prepare_data()
    data.setup("fit")
    train, built = data.datasets["train"], data.examples("train")
    longest: dict[str, int] = {}
    count: dict[str, int] = {}
    for index, length in zip(train["example_index"], train["length"]):
        conv = built[index].conv_id
        longest[conv], count[conv] = max(longest.get(conv, 0), length), count.get(conv, 0) + 1
    chosen: list[str] = []
    for conv in sorted(longest, key=longest.__getitem__, reverse=True):
        if sum(count[c] for c in chosen) >= examples:
            break
        chosen.append(conv)
    source = data.raw_dir()
    out.mkdir(parents=True)
    lines = (source / SPLIT_FILES["train"]).read_text(encoding="utf-8").splitlines(keepends=True)
    keep = set(chosen)
    (out / SPLIT_FILES["train"]).write_text(
        lines[0] + "".join(line for line in lines[1:] if line.split(",", 1)[0] in keep), encoding="utf-8")
    for split in ("val", "test"):
        shutil.copy(source / SPLIT_FILES[split], out / SPLIT_FILES[split])
    return [{"input_ids": row["input_ids"], "prompt_length": row["prompt_length"]}
            for row in train if built[row["example_index"]].conv_id in keep]


def run_project(model: str, gguf_file: str | None, data_dir: str, threads: int, root: str, extra: list[str]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    from empathic_lora.train import cli

    args = ["fit", "--config", "configs/smollm2_cpu.yaml", "--model.base_model", model, "--data.data_dir", data_dir,
            "--model.r", str(LORA["r"]), "--model.alpha", str(LORA["alpha"]), "--model.dropout", str(LORA["dropout"]),
            "--model.target_modules", json.dumps(LORA["target_modules"]), "--model.lr", str(LR),
            "--data.batch_size", str(BATCH), "--data.max_length", str(MAX_LENGTH), "--data.num_workers", "0",
            "--trainer.max_epochs", "1", "--trainer.max_steps", "-1", "--trainer.limit_val_batches", "0",
            "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", root,
            "--model.num_generation_samples", "0", '--trainer.callbacks+={"class_path": "trl_compare.ProjectClock"}']
    if gguf_file:
        args += ["--model.gguf_file", gguf_file]
    cli.main([*args, *extra])
    return dict(sys.modules["trl_compare"].CLOCK)  # the copy LightningCLI imported, beside __mp_main__


def run_trl(model: str, gguf_file: str | None, rows: list[dict[str, Any]], threads: int, root: str) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from empathic_lora.lm import pretrained

    tokenizer = pretrained.load_tokenizer(model, gguf_file)
    base = pretrained.load_model(model, gguf_file)
    data = Dataset.from_list([{"input_ids": row["input_ids"],
                               "completion_mask": [0] * row["prompt_length"] + [1] * (len(row["input_ids"]) - row["prompt_length"])}
                              for row in rows])
    clock: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock["start"] = time.perf_counter()

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock["seconds"] = time.perf_counter() - clock["start"]

    config = SFTConfig(output_dir=root, per_device_train_batch_size=BATCH, num_train_epochs=1, learning_rate=LR,
                       max_grad_norm=1.0, completion_only_loss=True, max_length=MAX_LENGTH, save_strategy="no",
                       report_to="none", use_cpu=True, dataloader_num_workers=0, seed=0, logging_steps=1)
    lora = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                      target_modules=LORA["target_modules"], task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=base, args=config, train_dataset=data, processing_class=tokenizer, peft_config=lora,
                         callbacks=[Clock()])
    trainer.train()
    return {**clock, "examples": len(rows), "gradient_checkpointing": config.gradient_checkpointing}


def _child(side: str, results: Any, *args: Any) -> None:
    try:
        clock = (run_project if side == "project" else run_trl)(*args)
        results.put((side, {"side": side, "examples": clock["examples"], "seconds": round(clock["seconds"], 2),
                            "examples_per_s": round(clock["examples"] / clock["seconds"], 3), "peak_rss_mb": _peak_rss_mb(),
                            **{k: v for k, v in clock.items() if k == "gradient_checkpointing"}}))
    except BaseException as error:  # noqa: BLE001  (reported by the parent, which then fails)
        results.put((side, {"error": f"{type(error).__name__}: {error}"}))


def main(argv: list[str]) -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="base model directory (the project's --model.base_model)")
    parser.add_argument("--gguf-file", default=None, help="the GGUF file in --model")
    parser.add_argument("--data-dir", required=True, help="EmpatheticDialogues raw directory")
    parser.add_argument("--examples", type=int, default=30, help="at least this many examples, whole conversations")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per side")
    parser.add_argument("--project-arg", action="append", default=[], metavar="FLAG=VALUE",
                        help="one more train.py flag for the project side, e.g. --project-arg=--model.quantize=nf4")
    args = parser.parse_args(argv)
    try:
        import trl  # noqa: F401
    except ModuleNotFoundError:
        raise UserError("bench/trl_compare.py needs TRL: pip install 'empathic_lora[bench-trl]'") from None
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        rows = worst_batch_set(args.model, args.gguf_file, args.data_dir, args.examples, data_dir)
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        sides = {
            "project": (args.model, args.gguf_file, str(data_dir), args.threads, str(Path(tmp) / "project"), args.project_arg),
            "trl": (args.model, args.gguf_file, rows, args.threads, str(Path(tmp) / "trl")),
        }
        processes = [context.Process(target=_child, args=(side, results, *side_args)) for side, side_args in sides.items()]
        for process in processes:
            process.start()
        measured = dict(results.get() for _ in processes)
        for process in processes:
            process.join()
    for side in sides:
        print(json.dumps(measured[side]))
    if any("error" in result for result in measured.values()):
        raise UserError("a side failed: " + "; ".join(f"{s}: {r['error']}" for s, r in measured.items() if "error" in r))
    project, theirs = measured["project"], measured["trl"]
    print(json.dumps({"examples_per_s_ratio": round(project["examples_per_s"] / theirs["examples_per_s"], 3),
                      "peak_rss_ratio": round(project["peak_rss_mb"] / theirs["peak_rss_mb"], 3),
                      "examples": project["examples"], "threads": args.threads, "project_args": args.project_arg}))


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
