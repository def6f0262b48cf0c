"""Training throughput of the project against the reference notebook's recipe, side by side.

    python bench/train_throughput.py --model ../shared/models/distilgpt2-architecture --random-init \
        --data-dir ../shared/data/empatheticdialogues --format seed --steps 10 --batch-size 8 \
        --max-length 128 --precision 32-true

Both implementations train on the same first N train examples with the same model, tokenizer,
precision and batch size, each in its own freshly spawned process (so that its peak RSS is its own).
N is one length-grouping window of the sampler (50 batches, what a batch is drawn from in a full
epoch), or more when more steps are asked. The project's split is tokenized into its cache
beforehand, as by a first `train.py` run. After `--warmup` untimed steps, `--steps` are timed.

The two run in lockstep: one step of the project, then one of the recipe, each waiting while the
other runs, so that both are timed in the same minutes of a machine whose load changes (a shared
CPU). A step's time runs from the moment its process may go on to the end of the step: fetching
and collating the batch, forward, loss, backward, optimizer and scheduler, all that the training
loop does, and nothing of the wait.

`--emotion-head W` compares the project with the emotion head on (`--model.emotion_loss_weight W`)
against the project as it trains by default, in the same lockstep, instead of against the recipe.

Target tokens are counted the same way on both sides: the reply and its eos, as far as they fit in
`--max-length`. Padded tokens are batch size x padded width. Output: one JSON line per
implementation, then one line of project / recipe ratios.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import multiprocessing
import queue
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

# Runnable from a checkout as `python bench/...` even where the package is not pip-installed.
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
from empathic_lora.errors import ArgumentParser, UserError, run_cli

FIELDS = ("examples_per_s", "target_tokens_per_s", "padded_tokens_per_s", "peak_rss_mb")


@dataclass(frozen=True)
class Settings:
    model: str
    random_init: bool
    data_dir: str
    format: str
    steps: int
    warmup: int
    batch_size: int
    max_length: int
    precision: str
    emotion_head: float | None = None

    @property
    def examples(self) -> int:
        from empathic_lora.data.batch_order import LengthGroupedSampler

        window = inspect.signature(LengthGroupedSampler).parameters["bucket_batches"].default
        return self.batch_size * max(self.warmup + self.steps, window)


@dataclass(frozen=True)
class Variant:
    """Switches for the project's speed levers. The defaults are what `train.py` runs;
    `bench/train_levers.py` flips them one at a time to measure what each is worth."""

    name: str = "project"
    dynamic_padding: bool = True  # False: every batch padded to --max-length
    group_by_length: bool = True  # False: random batches
    supervised_head: bool = True  # False: the model's own loss over logits at every position
    attention: str | None = None  # None: the library's default (SDPA); "eager" for the lever
    num_workers: int = 0  # DataLoader workers (the DataModule's default)
    compile: bool = False  # torch.compile the decoder (the whole module trips on `self.log`)
    fused_gelu: bool = True  # False: GPT-2's own five-op `gelu_new` back in place of torch's fused kernel
    emotion_loss_weight: float = 0.0  # > 0: the optional emotion head trained jointly
    module: dict[str, Any] = field(default_factory=dict)  # more `EmpatheticLoRAModule` arguments (adapter, dtype, ...)
    data: dict[str, Any] = field(default_factory=dict)  # more `EmpatheticDialoguesDataModule` arguments
    evaluate: bool = False  # True: after the timed steps, val/ppl and test/word_ppl of the trained model (untimed)


@dataclass
class StepClock:
    """Time spent in the steps after warm-up, and what those steps processed.

    `turn` is called at every step end and returns when this process may run its next step (the
    lockstep); the time spent in it is not counted.
    """

    warmup: int
    steps: int
    turn: Callable[[int], None]
    done: int = 0
    resumed: float = 0.0
    seconds: float = 0.0
    examples: int = 0
    padded_tokens: int = 0
    targets: list[Any] = field(default_factory=list)  # counted after the clock stops: no sync inside

    @property
    def finished(self) -> bool:
        return self.done >= self.warmup + self.steps

    def _now(self) -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def step_end(self, input_ids: torch.Tensor, targets: Any) -> None:
        now = self._now()
        self.done += 1
        if self.warmup < self.done <= self.warmup + self.steps:
            self.seconds += now - self.resumed
            self.examples += input_ids.shape[0]
            self.padded_tokens += input_ids.numel()
            self.targets.append(targets)
        self.turn(self.done)
        self.resumed = self._now()

    def result(self, count_targets: Callable[[Any], int]) -> dict[str, Any]:
        if not self.finished:
            raise RuntimeError(f"training ended after {self.done} of {self.warmup + self.steps} steps")
        seconds = self.seconds
        result = {
            "seconds": round(seconds, 3),
            "examples_per_s": round(self.examples / seconds, 3),
            "target_tokens_per_s": round(sum(map(count_targets, self.targets)) / seconds, 1),
            "padded_tokens_per_s": round(self.padded_tokens / seconds, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "threads": torch.get_num_threads(),
        }
        if torch.cuda.is_available():
            result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            result["device"] = torch.cuda.get_device_name()
        else:
            result["device"] = "cpu"
        return result


# -- the project: the LightningModule and DataModule that train.py runs ------------------------------
def measure_project(settings: Settings, turn: Callable[[int], None], variant: Variant = Variant()) -> dict[str, Any]:
    """A Lightning `Trainer.fit` of `EmpatheticLoRAModule` on `EmpatheticDialoguesDataModule`.

    Faithful to train.py because it is the same fit loop on the same objects (module defaults =
    the reference recipe's LoRA and AdamW settings, the DataModule's collator and length-grouped
    sampler); only what costs time without touching the step is left out (loggers, checkpoints,
    validation, progress bar), and the recipe's Trainer runs without its equivalents too.
    """
    import lightning as L

    from empathic_lora.data.datamodule import EmpatheticDialoguesDataModule
    from empathic_lora.train.lora_module import EmpatheticLoRAModule

    clock = StepClock(settings.warmup, settings.steps, turn)

    class Clock(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            clock.step_end(batch["input_ids"], (batch["labels"] != -100).sum())

    L.seed_everything(0, verbose=False)
    module = EmpatheticLoRAModule(
        settings.model, random_init=settings.random_init, emotion_loss_weight=variant.emotion_loss_weight, **variant.module
    )
    data = EmpatheticDialoguesDataModule(
        settings.data_dir, format=settings.format, max_length=settings.max_length, batch_size=settings.batch_size,
        max_examples=settings.examples, group_by_length=variant.group_by_length, num_workers=variant.num_workers,
        tokenizer=module.tokenizer, **variant.data,
    )
    if not variant.dynamic_padding:
        pad_id = data._collator().pad_id
        data._collator = lambda: _pad_to_length(pad_id, settings.max_length)
    if not variant.supervised_head:
        module.training_step = _full_logits_step.__get__(module)
    if variant.attention:
        module.model.get_base_model().set_attn_implementation(variant.attention)
    if not variant.fused_gelu:
        _unfuse_gelu(module)
    if variant.compile:
        causal_lm = module.model.get_base_model()
        getattr(causal_lm, causal_lm.base_model_prefix).compile(dynamic=True)
    trainer = L.Trainer(
        accelerator="auto", devices=1, precision=settings.precision, max_steps=settings.warmup + settings.steps,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[Clock()],
        gradient_clip_val=1.0,  # the recipe config's clipping, which is the HF Trainer's max_grad_norm: equal semantics
    )
    trainer.fit(module, datamodule=data)
    result = {"implementation": variant.name, **clock.result(lambda count: int(count))}
    if variant.evaluate:
        result["trainable_parameters"] = sum(p.numel() for p in module.parameters() if p.requires_grad)
        with tempfile.TemporaryDirectory() as results_dir:  # where validate/test write their results.json
            evaluator = L.Trainer(accelerator="auto", devices=1, precision=settings.precision, logger=False,
                                  enable_progress_bar=False, enable_model_summary=False, default_root_dir=results_dir)
            result["val_ppl"] = round(evaluator.validate(module, datamodule=data, verbose=False)[0]["val/ppl"], 3)
            result["test_word_ppl"] = round(evaluator.test(module, datamodule=data, verbose=False)[0]["test/word_ppl"], 3)
    return result


def _full_logits_step(self: Any, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
    """The naive step the supervised-head lever replaces: logits at every position, HF's loss."""
    loss = self.model(**batch).loss
    self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
    return loss


def _unfuse_gelu(model: torch.nn.Module) -> None:
    """The fused tanh-GELU that `base.load_model` puts in replaced by GPT-2's own `gelu_new` again."""
    from transformers.activations import NewGELUActivation

    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, torch.nn.GELU) and child.approximate == "tanh":
                setattr(parent, name, NewGELUActivation())


def _pad_to_length(pad_id: int, length: int) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
    """The project's collator with every batch padded on to `length` (the dynamic-padding lever off)."""
    from empathic_lora.data.datamodule import Collator

    collate = Collator(pad_id)
    fill = {"input_ids": pad_id, "attention_mask": 0, "labels": -100}

    def pad(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = collate(items)
        extra = length - batch["input_ids"].shape[1]
        return {key: torch.nn.functional.pad(value, (0, extra), value=fill[key]) for key, value in batch.items()}

    return pad


# -- the reference notebook's recipe ---------------------------------------------------------------
def measure_recipe(settings: Settings, turn: Callable[[int], None], dialogues: Sequence[Any]) -> dict[str, Any]:
    """The recipe's `Trainer.train()` on the same dialogues; a Trainer subclass and a callback only
    observe the batches and the step ends."""
    import hf_recipe
    from transformers import Trainer, TrainerCallback

    from empathic_lora.conversation import render

    clock = StepClock(settings.warmup, settings.steps, turn)

    class Observed(Trainer):
        def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
            self.current_input_ids = inputs["input_ids"]
            return super().training_step(model, inputs, num_items_in_batch)

    class Clock(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            ids = trainer.current_input_ids
            clock.step_end(ids, ids)

    with tempfile.TemporaryDirectory() as output_dir:
        trainer = hf_recipe.build_trainer(
            settings.model, dialogues, random_init=settings.random_init, max_length=settings.max_length,
            batch_size=settings.batch_size, precision=settings.precision, max_steps=settings.warmup + settings.steps,
            output_dir=output_dir, callbacks=[Clock()], trainer_class=Observed,
        )
        # The reply + eos tokens of each padded row, found by its ids: the recipe's batches carry
        # no example index, and its labels cover the prompt as well.
        tokenizer = trainer.data_collator.tokenizer
        targets = {}
        for (context, reply), ids in zip(dialogues, trainer.train_dataset["input_ids"]):
            room = settings.max_length - len(tokenizer(render(context))["input_ids"])
            targets[tuple(ids)] = max(0, min(len(tokenizer(f" {reply}")["input_ids"]) + 1, room))
        trainer.train()
    return {"implementation": "recipe", **clock.result(lambda ids: sum(targets[tuple(row)] for row in ids.tolist()))}


# -- running each in its own process, in lockstep ---------------------------------------------------
Job = tuple[Callable[..., dict[str, Any]], tuple]  # measure_*(settings, turn, *rest) and (settings, *rest)


def _child(results: Any, index: int, conductor: Any, function: Callable[..., dict[str, Any]], args: tuple) -> None:
    def turn(step: int) -> None:
        conductor.send(step)
        conductor.recv()

    settings, *rest = args
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON lines alone
            results.put((index, "ok", function(settings, turn, *rest)))
    except UserError as error:
        results.put((index, "user_error", str(error)))
    except BaseException:
        results.put((index, "error", traceback.format_exc()))


def side_by_side(jobs: Sequence[Job], steps: int) -> list[dict[str, Any]]:
    """Run each job in a freshly spawned process (its peak RSS is its own, nothing inherited)
    and let them take turns, one training step each, for `steps` steps; return their results."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes, conductors = [], []
    for index, (function, args) in enumerate(jobs):
        conductor, child_end = context.Pipe()
        process = context.Process(target=_child, args=(results, index, child_end, function, args))
        process.start()
        child_end.close()
        processes.append(process)
        conductors.append(conductor)
    try:
        # Step 1 (model loading included) runs in all processes at once; it is never timed.
        for step in range(1, steps + 1):
            for conductor in conductors:
                if step > 1:
                    conductor.send("go")
                if conductor.recv() != step:
                    raise RuntimeError(f"a benchmark process fell out of step at step {step}")
        for conductor in conductors:
            conductor.send("go")  # every last step has ended: wind down and report
    except (EOFError, OSError):  # a process ended early: its report says why
        pass
    try:
        collected = {}
        for _ in jobs:
            index, value = _report(results, processes, jobs)
            collected[index] = value
    finally:
        for process in processes:
            if process.is_alive() and len(collected) < len(jobs):
                process.terminate()
            process.join()
    return [collected[index] for index in range(len(jobs))]


def _report(results: Any, processes: list[Any], jobs: Sequence[Job]) -> tuple[int, dict[str, Any]]:
    while True:
        try:
            index, status, value = results.get(timeout=5)
            break
        except queue.Empty:
            if not any(process.is_alive() for process in processes):
                raise RuntimeError(f"benchmark processes died (exit codes {[p.exitcode for p in processes]})") from None
    if status == "user_error":
        raise UserError(value)
    if status == "error":
        raise RuntimeError(f"{jobs[index][0].__name__} failed:\n{value.strip()}")
    return index, value


def prepare(settings: Settings) -> list[Any]:
    """Check the inputs, tokenize the project's split into its cache (as a first `train.py` run
    would) and return the same first N examples, as plain (context, reply) pairs, for the recipe."""
    from empathic_lora.data.datamodule import EmpatheticDialoguesDataModule
    from empathic_lora.lm.pretrained import load_tokenizer

    data = EmpatheticDialoguesDataModule(
        settings.data_dir, format=settings.format, max_length=settings.max_length,
        max_examples=settings.examples, tokenizer=load_tokenizer(settings.model),
    )
    data.setup("fit")
    return [(example.context, example.target) for example in data.examples("train")]


def ratios(project: dict[str, Any], recipe: dict[str, Any]) -> dict[str, Any]:
    keys = [*FIELDS, *(["peak_cuda_mb"] if "peak_cuda_mb" in project else [])]
    return {"ratio": f"{project['implementation']} / {recipe['implementation']}", **{k: round(project[k] / recipe[k], 3) for k in keys}}


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model directory (config.json + tokenizer)")
    parser.add_argument("--random-init", action="store_true", help="fresh weights from the config (no weights in --model)")
    parser.add_argument("--data-dir", required=True, help="EmpatheticDialogues directory with train.csv, valid.csv, test.csv")
    parser.add_argument("--format", choices=["seed", "dialogue"], default="seed", help="example format (the notebook's is seed)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128, help="longest example in tokens; the recipe pads to it")
    from hf_recipe import (
        PRECISION_FLAGS,  # here, not at the top: the project's process never loads it
    )

    parser.add_argument("--precision", default="32-true", choices=list(PRECISION_FLAGS), help="32-true on CPU, 16-mixed on a GPU")
    parser.add_argument("--emotion-head", type=float, metavar="W", help="compare the project with the emotion head on "
                        "(loss weight W > 0) against it off, instead of against the recipe")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 1:
        raise UserError(f"--steps {args.steps} and --warmup {args.warmup} must both be at least 1")
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size} must be at least 1")
    if args.emotion_head is not None and args.emotion_head <= 0:
        raise UserError(f"--emotion-head {args.emotion_head} must be above 0 (0 is the head off)")
    return Settings(**{key.replace("-", "_"): value for key, value in vars(args).items()})


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_args(argv)
    dialogues = prepare(settings)
    common = {"examples": settings.examples, **asdict(settings)}
    jobs = [(measure_project, (settings,)), (measure_recipe, (settings, dialogues))]
    if settings.emotion_head is not None:
        head = Variant("project with the emotion head", emotion_loss_weight=settings.emotion_head)
        jobs[1] = (measure_project, (settings, head))
    project, other = ({**result, **common} for result in side_by_side(jobs, settings.warmup + settings.steps))
    print(json.dumps(project), flush=True)
    print(json.dumps(other), flush=True)
    print(json.dumps(ratios(other, project) if settings.emotion_head is not None else ratios(project, other)), flush=True)


if __name__ == "__main__":
    run_cli(main)
