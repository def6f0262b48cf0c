"""The LightningModule: a frozen causal LM with a PEFT LoRA adapter, trained on replies only."""

from __future__ import annotations

import contextlib
import inspect
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from peft import PeftConfig
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from torchmetrics.text import Perplexity
from transformers import (
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

from empathic_lora.data import emotion_labels
from empathic_lora.errors import UserError
from empathic_lora.evaluate import reply_scoring, results_file, samples_file
from empathic_lora.evaluate.metrics import (
    DEFAULT_REPLY_METRICS,
    FieldWordPerplexity,
    WordPerplexity,
    build_reply_metrics,
    example_nll,
    field_words_in_labels,
    words_in_labels,
)
from empathic_lora.lm import (
    adapted_model,
    adapters,
    checkpoint_file,
    emotion_classifier,
    pretrained,
    quantized_base,
)
from empathic_lora.lm.decoding import GenerationSettings, context_window
from empathic_lora.ranges import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Probability,
)
from empathic_lora.train.preference_loss import LossName
from empathic_lora.train.preference_objective import LabelSmoothing, LengthWeight, Objective, PreferenceObjective

Batch = dict[str, torch.Tensor]
log = logging.getLogger(__name__)
EVALUATION_ARGS = ["num_generation_samples", "generation", "generation_metrics", "generation_every_n_epochs", "zero_shot"]


class EmpatheticLoRAModule(PreferenceObjective, L.LightningModule):
    def __init__(
        self,
        base_model: str = "distilgpt2",
        gguf_file: str | None = None,
        random_init: bool = False,
        init_seed: NonNegativeInt = 0,
        r: PositiveInt = 8,
        alpha: PositiveInt = 32,
        dropout: Probability = 0.05,
        bias: Literal["none", "all", "lora_only"] = "none",
        target_modules: list[str] | str | None = None,
        peft: PeftConfig | None = None,
        dtype: pretrained.DType = "float32",
        gradient_checkpointing: bool = False,
        quantize: quantized_base.Quantize = "none",
        lr: PositiveFloat = 3e-4,
        weight_decay: NonNegativeFloat = 0.0,
        warmup_steps: NonNegativeInt = 0,
        scheduler: Literal["linear", "cosine", "constant"] = "linear",
        num_generation_samples: NonNegativeInt | Literal["all"] = 200,
        generation: dict[str, Any] | None = None,
        # Explicit (not null) so that `--model.generation_metrics+=` adds to the defaults.
        generation_metrics: list[dict[str, Any]] | None = DEFAULT_REPLY_METRICS,
        generation_every_n_epochs: PositiveInt | None = None,
        zero_shot: bool = False,
        emotion_loss_weight: NonNegativeFloat = 0.0,
        emotion_lr: PositiveFloat | None = None,
        objective: Objective = "sft",
        dpo_beta: PositiveFloat = 0.1,
        dpo_loss: LossName = "sigmoid",
        dpo_label_smoothing: LabelSmoothing = 0.0,
        dpo_ld_alpha: LengthWeight | None = None,
        init_from: str | None = None,
    ) -> None:
        """Parameter-efficient fine-tuning of a causal LM on listener replies (LoRA by default).

        Args:
            base_model: Hugging Face Hub id, local directory, or `builtin:tiny-gpt2`.
            gguf_file: Load the base from this GGUF file inside the `base_model` directory (a local
                file is dequantized once into the cache, `empathic_lora/lm/gguf_bases.py`).
            random_init: Build the base from its config with fresh weights drawn from
                `init_seed` (for architecture-only directories; the checkpoint rebuilds it).
            init_seed: Seed of those fresh weights.
            r: LoRA rank (this and the next four flags are the default adapter's shorthand; with
                `peft` set they must stay at their defaults).
            alpha: LoRA scaling numerator (the update is scaled by alpha / r).
            dropout: Dropout on the LoRA input.
            bias: Which biases to train: `none`, `all` or `lora_only`.
            target_modules: Module names that get adapters; `null` picks PEFT's default for the
                architecture (`c_attn` for GPT-2, `q_proj`/`v_proj` for Llama). PEFT's string forms
                work too: `all-linear` (every projection but the output head), or a regular
                expression matched against full module names (`.*\.(q|v)_proj`).
            peft: Any other adapter, as a `peft.PeftConfig` subclass's `class_path`/`init_args`
                (`peft.LoraConfig` with `use_dora`, `use_rslora` or `init_lora_weights: pissa`,
                `peft.IA3Config`, `peft.PromptTuningConfig`, ...; configs/methods/ has one file
                each). `task_type` is filled in, and `target_modules: null` is PEFT's per-architecture
                default. `null`: the LoRA of the flags above.
            dtype: How the frozen base's weights are held: `float32`, or `bfloat16`/`float16` for
                half the memory (`trainer.precision` still decides the compute's autocast; the
                adapter's weights stay float32).
            gradient_checkpointing: Recompute the base's activations in backward instead of keeping
                them: less memory, more compute (docs/benchmarks.md measures both).
            quantize: `nf4` (`int8`) holds the frozen base's projections in 4 (8) bits (QLoRA's NormalFloat,
                through torchao, on CPU and CUDA alike; `pip install 'empathic_lora[quantize]'`),
                dequantizing each only while it computes; the adapter, embeddings and LM head stay
                in float, and export --merge gives a float model. `none`: the base as `dtype`.
            lr: AdamW learning rate.
            weight_decay: AdamW weight decay.
            warmup_steps: Steps of linear warm-up from 0 to `lr`.
            scheduler: Decay after warm-up over the Trainer's estimated steps.
            num_generation_samples: Validate/test also generate replies for this many examples of
                the split (a fixed seeded sample, the same for every run) and score them; `all`:
                every example of the split (with `data.format: dialogue`, every listener turn: the
                test split's 5,257; `data.max_examples` still applies); either way in batches of
                `data.eval_batch_size` contexts of similar length; 0 disables.
            generation: Decoding settings overriding chat's defaults (keys of
                `GenerationSettings`: max_new_tokens, do_sample, temperature, top_p, ...).
            generation_metrics: Reply metrics as `class_path`/`init_args` (+ optional `name`)
                entries of torchmetrics `Metric` classes; default: BLEU-1..4, ROUGE-L, Distinct-1/2
                (ours and the field's), intra Distinct-1/2 and mean length (docs/metrics.md); `+=`
                adds to them.
            generation_every_n_epochs: During fit, also generate and score replies at the
                validations of every n-th epoch (`null`: only in validate and test).
            zero_shot: Evaluate with the adapter switched off: the untouched base model.
            emotion_loss_weight: W > 0 adds the emotion head (`empathic_lora/lm/emotion_classifier.py`): a
                linear 32-way classifier of the conversation's emotion label on the final hidden
                state at the response cue, trained jointly (loss = LM loss + W x its
                cross-entropy) and scored as emotion_acc/emotion_f1; 0 (the reference recipe):
                no head.
            emotion_lr: The emotion head's own AdamW learning rate (`null`: `lr`). The head starts
                from random weights while the adapter starts as a no-op, so it usually wants a
                larger one (docs/results.md says why, with the run that used 1e-3).
            objective: `sft` trains on the reference replies; `dpo` on the preference pairs of
                `--data.pairs` (`empathic_lora/train/preference_objective.py`: the reference is the
                starting policy, dropout is off).
            dpo_beta: DPO's beta: how far the policy may move from the reference (TRL's default 0.1).
            dpo_loss: `sigmoid` (DPO, Rafailov et al. 2023; cDPO with `dpo_label_smoothing`) or
                `ipo` (Azar et al. 2023, log-ratios averaged per token as in TRL).
            dpo_label_smoothing: cDPO's assumed share of flipped labels (0 <= eps < 0.5; for noisy
                human judgments); `sigmoid` only.
            dpo_ld_alpha: LD-DPO (Liu et al. 2024; TRL's `ld_alpha`): the tokens of a reply past the
                shorter reply of its pair count this much (0 <= a <= 1) in both the policy's and the
                reference's log-probabilities, so a longer reply cannot win by length alone;
                `null`: plain DPO. For pairs whose replies differ in length by kind (`self` pairs).
            init_from: Start from this run's adapter: an SFT checkpoint, its run directory (newest
                last.ckpt) or its exported adapter (`python -m empathic_lora.export`); `null`: a fresh
                adapter (the zero-shot base). A resumed run's checkpoint still wins.
        """
        super().__init__()
        # Evaluation settings stay out of the checkpoint: LightningCLI re-applies a checkpoint's
        # hyperparameters over the command line, which would turn `test --ckpt_path X
        # --model.zero_shot true` back into the training run's values.
        self.save_hyperparameters(ignore=EVALUATION_ARGS)
        self.num_generation_samples, self.generation_every_n_epochs = num_generation_samples, generation_every_n_epochs
        self.zero_shot = zero_shot
        adapted = self._adapted_model(base_model, gguf_file, random_init, init_seed, dtype, peft, emotion_loss_weight,
                                      emotion_lr, r=r, alpha=alpha, dropout=dropout, bias=bias, target_modules=target_modules)
        self.tokenizer, self.model, self.peft_config = adapted.tokenizer, adapted.model, adapted.peft_config
        self.base_signature, self.initial_adapter, self.emotion_head = (
            adapted.base_signature, adapted.initial_adapter, adapted.emotion_head)
        adapted_model.check_zero_shot(zero_shot, self.initial_adapter, self.peft_config)
        adapted_model.prepare_for_training(self.model, gradient_checkpointing)
        self.supervised_head = adapted_model.lm_head(self.model, self.peft_config)
        if self.emotion_head is not None:
            self.val_emotion, self.test_emotion = (self._emotion_metrics(stage) for stage in ("val", "test"))
        self._loss_metrics()
        self.generation_settings = self._generation_settings(generation)
        # Built now so that a bad entry fails before training, not at the first evaluation.
        self.reply_metrics = build_reply_metrics(generation_metrics)
        # Checkpoints hold only the trainable weights; the frozen base is rebuilt on load.
        self.strict_loading = False
        self._preference_init(objective, self.emotion_head is not None)
        if dpo_label_smoothing and dpo_loss != "sigmoid":
            raise UserError(f"--model.dpo_label_smoothing {dpo_label_smoothing} applies to --model.dpo_loss sigmoid only")

    # -- the steps of __init__ -----------------------------------------------------------------
    def _adapted_model(
        self, base_model: str, gguf_file: str | None, random_init: bool, init_seed: int, dtype: pretrained.DType,
        peft: PeftConfig | dict[str, Any] | None, emotion_loss_weight: float, emotion_lr: float | None, **shorthand: Any,
    ) -> adapted_model.AdaptedModel:
        """The base under its adapter, and the emotion head when W > 0 (`adapted_model.build`). An
        adapter given as a Python object is recorded in the hyperparameters as plain values, since a
        checkpoint must hold plain values only. Without the head (W = 0) the module, its random draws
        and its checkpoint are as before the head existed."""
        if emotion_lr is not None and emotion_loss_weight == 0:
            raise UserError(f"--model.emotion_lr {emotion_lr} sets the emotion head's learning rate, but there is no head: "
                            "set --model.emotion_loss_weight > 0 too")
        defaults = {name: inspect.signature(EmpatheticLoRAModule.__init__).parameters[name].default for name in shorthand}
        adapted = adapted_model.build(base_model, gguf_file, random_init, init_seed, dtype, peft, shorthand, defaults,
                                      emotion_head=emotion_loss_weight > 0, quantize=self.hparams["quantize"])
        if isinstance(peft, PeftConfig):
            self.hparams["peft"] = adapters.as_hparam(adapted.peft_config)
        return adapted

    def _loss_metrics(self) -> None:
        """Validation and test loss, token perplexity and the two word perplexities (docs/metrics.md)."""
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_ppl, self.test_ppl = Perplexity(ignore_index=-100), Perplexity(ignore_index=-100)
        self.val_word_ppl, self.test_word_ppl = WordPerplexity(), WordPerplexity()
        self.val_word_ppl_field, self.test_word_ppl_field = FieldWordPerplexity(), FieldWordPerplexity()

    @staticmethod
    def _generation_settings(generation: dict[str, Any] | None) -> GenerationSettings:
        """Chat's decoding defaults with `--model.generation`'s keys over them, checked now."""
        try:
            return GenerationSettings(**(generation or {}))
        except TypeError:
            known = ", ".join(asdict(GenerationSettings()))
            raise UserError(f"--model.generation {generation} has an unknown key; known keys: {known}") from None
        except ValueError as error:
            raise UserError(f"--model.generation: {error}") from None

    @staticmethod
    def _emotion_metrics(stage: str) -> MetricCollection:
        classes = len(emotion_labels.EMOTIONS)
        return MetricCollection(
            {"emotion_acc": MulticlassAccuracy(classes, average="micro"),  # top-1, as the field reports it
             "emotion_f1": MulticlassF1Score(classes, average="macro"),
             "emotion_majority": emotion_classifier.MajorityClassRate(classes)},
            prefix=f"{stage}/",
        )

    # -- forward -------------------------------------------------------------------------------
    def supervised_logits(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Float32 logits and targets at the supervised (reply) positions only (see `forward_batch`)."""
        logits, targets, _ = self.forward_batch(batch)
        return logits, targets

    def forward_batch(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Float32 logits and targets at the supervised (reply) positions only, and with the emotion
        head on, the final hidden state at each row's response cue (from the same forward).

        The vocabulary projection is applied only where a label exists: most tokens are context,
        and the LM head is about half the FLOPs of a small model. The result is exactly the
        full-logits loss over the same tokens (tested per family); for an architecture where that
        cannot be shown (see `supervised_lm_head.supervised_head_problem`) the model's own forward is used.
        """
        labels = batch["labels"][:, 1:]
        supervised = labels != -100
        want_cue = self.emotion_head is not None
        if self.supervised_head is None:
            output = self.model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=want_cue
            )
            width = batch["input_ids"].shape[1]  # prompt tuning's virtual tokens come first: dropped
            cue = emotion_classifier.cue_states(output.hidden_states[-1][:, -width:], batch["labels"]) if want_cue else None
            return output.logits[:, -width:][:, :-1][supervised].float(), labels[supervised], cue
        causal_lm = self.model.get_base_model()
        decoder = getattr(causal_lm, causal_lm.base_model_prefix)
        hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        logits = self.supervised_head(causal_lm.get_output_embeddings()(hidden[:, :-1][supervised]))
        cue = emotion_classifier.cue_states(hidden, batch["labels"]) if want_cue else None
        return logits.float(), labels[supervised], cue

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        if self._is_preference:
            return self._preference_training_step(batch)
        logits, targets, cue = self.forward_batch(batch)
        loss = F.cross_entropy(logits, targets)
        size = batch["input_ids"].shape[0]
        if cue is not None:
            emotion_loss = F.cross_entropy(self.emotion_head(cue), batch["emotion"])
            self.log("train/lm_loss", loss, batch_size=size)
            self.log("train/emotion_loss", emotion_loss, batch_size=size)
            loss = loss + self.hparams.emotion_loss_weight * emotion_loss
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        return loss

    def setup(self, stage: str) -> None:
        self._preference_setup(stage)
        # Prompt tuning's virtual tokens take positions too: an example that fits max_length alone
        # would run past the model's context window (an index error deep in the embeddings).
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        virtual, window = adapters.virtual_tokens(self.model), context_window(self.model)
        if virtual and datamodule is not None and datamodule.hparams.max_length + virtual > window:
            raise UserError(
                f"--data.max_length {datamodule.hparams.max_length} plus the {virtual} virtual tokens of --model.peft "
                f"exceed the model's context window of {window} tokens; lower one of them"
            )

    def on_train_batch_end(self, outputs: Any, batch: Batch, batch_idx: int) -> None:
        # Lightning validates only at epoch or interval boundaries; a run cut short by max_steps
        # would end without a val/ppl (and without a best checkpoint). Stopping here makes the
        # fit loop validate once more before it ends.
        if 0 < self.trainer.max_steps <= self.trainer.global_step:
            self.trainer.should_stop = True

    # -- evaluation ----------------------------------------------------------------------------
    def _adapter_scope(self) -> contextlib.AbstractContextManager:
        """Zero-shot evaluation runs the base model with the adapter switched off."""
        return self.model.disable_adapter() if self.zero_shot else contextlib.nullcontext()

    def _evaluate(
        self, batch: Batch, loss_metric: MeanMetric, ppl_metric: Perplexity, word_ppl_metric: WordPerplexity, stage: str
    ) -> None:
        with self._adapter_scope():
            logits, targets, cue = self.forward_batch(batch)
        loss_metric.update(F.cross_entropy(logits, targets), weight=targets.numel())
        ppl_metric.update(logits.unsqueeze(0), targets.unsqueeze(0))
        word_ppl_metric.update(logits, targets, words_in_labels(batch["labels"], self.tokenizer))
        field_ppl_metric = getattr(self, f"{stage}_word_ppl_field")
        field_ppl_metric.update(example_nll(logits, targets, batch["labels"]), field_words_in_labels(batch["labels"], self.tokenizer))
        size = batch["input_ids"].shape[0]
        self.log(f"{stage}/loss", loss_metric, prog_bar=True, batch_size=size)
        self.log(f"{stage}/ppl", ppl_metric, prog_bar=True, batch_size=size)
        self.log(f"{stage}/word_ppl", word_ppl_metric, batch_size=size)
        self.log(f"{stage}/word_ppl_field", field_ppl_metric, batch_size=size)
        # Zero-shot evaluates the base without its adapter: the head was trained on other states.
        if cue is not None and not self.zero_shot:
            emotion_metrics = getattr(self, f"{stage}_emotion")
            emotion_metrics.update(preds=self.emotion_head(cue), target=batch["emotion"])
            self.log_dict(emotion_metrics, batch_size=size)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, self.val_loss, self.val_ppl, self.val_word_ppl, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, self.test_loss, self.test_ppl, self.test_word_ppl, "test")

    def _on_evaluation_start(self) -> None:
        if self.zero_shot:
            log.info("zero_shot: evaluating the base model with the adapter switched off")
        elif self.trainer.ckpt_path is None and self.global_step == 0:
            log.info("no checkpoint: evaluating the base model with an untrained (zero) adapter, i.e. zero-shot")

    def on_validation_start(self) -> None:
        if self.trainer.state.fn == "validate":
            self._on_evaluation_start()

    def on_test_start(self) -> None:
        self._on_evaluation_start()

    def on_fit_start(self) -> None:
        self._preference_fit_start()

    def on_validation_epoch_end(self) -> None:
        every = self.generation_every_n_epochs
        if self.trainer.sanity_checking:
            return
        self._preference_validation()
        if self.trainer.state.fn == "fit" and (every is None or (self.current_epoch + 1) % every):
            return
        self._evaluate_replies("val")

    def on_test_epoch_end(self) -> None:
        self._evaluate_replies("test")

    def on_validation_end(self) -> None:
        if self.trainer.state.fn == "validate":
            self._write_results("val")

    def on_test_end(self) -> None:
        self._write_results("test")

    def _write_results(self, stage: str) -> None:
        """results.json beside metrics.csv: every metric, what was scored, config, code and versions."""
        field_ppl = getattr(self, f"{stage}_word_ppl_field")
        with field_ppl.sync_context():  # every process's count (collective: before the rank check)
            examples = int(field_ppl.examples)
        run_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)  # log_dir broadcasts: every rank asks
        if not self.trainer.is_global_zero:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        sample = len(reply_scoring.fixed_sample(datamodule.examples(stage), self.num_generation_samples)) if datamodule else 0
        scores = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith(f"{stage}/")}
        results_file.write(run_dir, results_file.build(run_dir, stage, scores, examples, sample, self.trainer.ckpt_path))

    def _evaluate_replies(self, stage: str) -> None:
        """Generate for the split's fixed sample (sharded over processes), log the reply metrics,
        and append the samples to the run's samples.jsonl."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.num_generation_samples == 0 or datamodule is None:
            return
        sample = reply_scoring.fixed_sample(datamodule.examples(stage), self.num_generation_samples)
        mine = sample[self.global_rank :: self.trainer.world_size]
        with self._adapter_scope():
            replies = reply_scoring.generate(
                self.model, datamodule.formatter, mine, self.generation_settings, datamodule.hparams.eval_batch_size
            )
        mine_lines = reply_scoring.records(mine, replies, stage=stage, epoch=self.current_epoch)
        lines = reply_scoring.gather(mine_lines)
        run_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)  # log_dir broadcasts: every rank asks
        if self.trainer.is_global_zero:
            # Written before they are scored: a metric that fails must not lose an hour of generation
            # (`python -m empathic_lora.score` rescores the file).
            samples_file.append(run_dir / samples_file.SAMPLES_FILE, lines)
            reply_scoring.log_as_text(self.trainer.loggers, lines, f"{stage}/samples", self.global_step)
        scores = reply_scoring.score(self.reply_metrics, mine_lines)
        for key, value in scores.items():
            self.log(f"{stage}/{key}", value)

    # -- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        head = set(self.emotion_head.parameters()) if self.emotion_head is not None else set()
        groups = [{"params": [p for p in self.parameters() if p.requires_grad and p not in head]}]
        if head:
            groups.append({"params": list(self.emotion_head.parameters()), "lr": self.hparams.emotion_lr or self.hparams.lr})
        optimizer = torch.optim.AdamW(groups, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = int(self.trainer.estimated_stepping_batches)
        warmup = self.hparams.warmup_steps
        if self.hparams.scheduler == "cosine":
            schedule = get_cosine_schedule_with_warmup(optimizer, warmup, total)
        elif self.hparams.scheduler == "linear":
            schedule = get_linear_schedule_with_warmup(optimizer, warmup, total)
        else:
            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / (warmup + 1)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # -- checkpoints ---------------------------------------------------------------------------
    def trainable_state_keys(self) -> set[str]:
        return adapted_model.AdaptedModel(self.tokenizer, self.model, self.peft_config, self.base_signature,
                                          self.initial_adapter, self.emotion_head).trainable_state_keys()

    def on_save_checkpoint(self, ckpt: dict[str, Any]) -> None:
        keep = self.trainable_state_keys()
        ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if k in keep}
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        ckpt[checkpoint_file.META_KEY] = {
            "format_version": checkpoint_file.FORMAT_VERSION,
            "signature": self.base_signature,
            "data": dict(datamodule.hparams) if datamodule is not None else {},
        }
        if self.emotion_head is not None:
            ckpt[checkpoint_file.META_KEY]["emotions"] = list(emotion_labels.EMOTIONS)
        self._preference_save(ckpt)

    def on_load_checkpoint(self, ckpt: dict[str, Any]) -> None:
        self._preference_load(ckpt)
        checkpoint_file.check_fits(ckpt, self.base_signature, self.trainable_state_keys(), self.hparams.base_model)
