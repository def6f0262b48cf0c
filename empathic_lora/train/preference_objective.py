"""`--model.objective dpo`: preference training of the same adapter, as a part of
`EmpatheticLoRAModule` (mixed in, so that `train.py`'s fixed module class, its saved configs and
its checkpoints stay as they were; with `objective: sft` none of this runs).

Sequence log-probabilities are the module's own `forward_batch` over the reply and eos, exactly
the tokens SFT supervises, through the same formatter and supervised-only LM head.

The reference model is the starting policy, and is never held as a second model: its
log-probabilities are computed once per pair, before the first step, and kept (TRL's
`precompute_ref_log_probs`). Of the three ways the issue allows, this one is the cheapest per
step (each step runs the policy only: no reference forward, no adapter swap), holds no second
copy of anything but two numbers per pair, and survives a resume exactly (the numbers go into the
checkpoint, so a resumed run keeps the reference of the run it continues rather than the
resumed weights). They are computed on the very batches of the first epoch, so at step 0 policy
and reference agree bit for bit: the first loss is exactly ln 2.

Dropout is switched off in the whole model (as TRL does by default): with it, the policy's
log-probabilities at step 0 would differ from the reference's by noise, the loss would not start
at ln 2, and the rewards would measure dropout as much as learning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from jsonargparse.typing import ClosedUnitInterval, restricted_number_type
from torchmetrics import MeanMetric

from empathic_lora.errors import UserError
from empathic_lora.train import policy_start
from empathic_lora.train.preference_loss import PreferenceTerms, preference_loss, sequence_logps

log = logging.getLogger(__name__)

Objective = Literal["sft", "dpo"]
# cDPO's label noise: at 0.5 chosen and rejected would be interchangeable.
LabelSmoothing = restricted_number_type("ZeroToBelowHalf", float, [(">=", 0), ("<", 0.5)])
# LD-DPO's weight of the tokens past the shorter reply: 0 drops them, 1 is plain DPO.
LengthWeight = ClosedUnitInterval
REFERENCE_KEY = "preference_reference"  # the checkpoint's reference log-probabilities
LOGGED = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected")
Batch = dict[str, torch.Tensor]


def disable_dropout(model: torch.nn.Module) -> None:
    """Every dropout module to p = 0 (TRL's `disable_dropout_in_model`, which is not importable
    without TRL, a dev-only dependency here)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


class PreferenceObjective:
    """The preference half of `EmpatheticLoRAModule`: every method here starts with `_preference`
    or is called from one of its hooks only when `objective` is `dpo`."""

    def _preference_init(self, objective: Objective, emotion_head: bool) -> None:
        self.reference_logps: dict[str, torch.Tensor] = {}
        if objective != "dpo":
            return
        if emotion_head:
            raise UserError("--model.objective dpo trains the adapter on pairs; the emotion head has no labels there: "
                            "set --model.emotion_loss_weight 0")
        disable_dropout(self.model)
        self.val_preference = torch.nn.ModuleDict({name.replace("/", "__"): MeanMetric() for name in (*LOGGED, "loss")})

    @property
    def _is_preference(self) -> bool:
        return self.hparams.get("objective", "sft") == "dpo"

    # -- the starting policy ----------------------------------------------------------------------
    def _preference_setup(self, stage: str) -> None:
        """`init_from`'s adapter into the model (a checkpoint being resumed replaces it right after,
        in Lightning's restore); the pairs tokenized before training starts."""
        if self.hparams.get("init_from"):
            source = policy_start.load_adapter(self, self.hparams.init_from)
            log.info("init_from: starting from the adapter of %s", source)
        if self._is_preference and stage in ("fit", "validate"):
            datamodule = getattr(self.trainer, "datamodule", None)
            if datamodule is None or not hasattr(datamodule, "setup_pairs"):
                raise UserError("--model.objective dpo needs the EmpatheticDialoguesDataModule's --data.pairs")
            datamodule.setup_pairs()

    @torch.no_grad()
    def _sequence_logps_of(self, batches: Iterable[Batch], size: int) -> torch.Tensor:
        """(size, 2) log-probabilities of each pair's chosen and rejected reply, by `pair_index`."""
        logps = torch.full((size, 2), float("nan"), device=self.device)
        with self.trainer.precision_plugin.forward_context():
            for batch in batches:
                batch = {key: value.to(self.device) for key, value in batch.items()}
                sequence, _ = self._sequence_logps(batch)
                logps[batch["pair_index"]] = torch.stack(sequence.chunk(2), dim=1)
        return logps

    def _preference_fit_start(self) -> None:
        """The reference log-probabilities of every pair, from the starting policy, unless the
        checkpoint being resumed brought its own."""
        if not self._is_preference:
            return
        if self.reference_logps:
            self._preference_check_resume()
            return
        datamodule = self.trainer.datamodule
        train, val = datamodule.pair_datasets["train"], datamodule.pair_datasets["val"]
        log.info("dpo: reference log-probabilities of %d training and %d validation pairs from the starting policy",
                 len(train), len(val))
        self.reference_logps = {
            "train": self._sequence_logps_of(datamodule.reference_batches(self.trainer.world_size), len(train)),
            "val": self._sequence_logps_of(datamodule.pair_batches("val"), len(val)),
        }

    # -- the objective ------------------------------------------------------------------------------
    def _sequence_logps(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's summed log-probability of its supervised tokens (reply and eos), weighted as
        `dpo_ld_alpha` says (`sequence_logps`), and their count."""
        logits, targets, _ = self.forward_batch(batch)
        mask = batch["labels"][:, 1:] != -100
        token_logps = torch.zeros(mask.shape, dtype=torch.float64, device=logits.device)
        token_logps[mask] = -F.cross_entropy(logits.float(), targets, reduction="none").double()  # row order, as the mask
        return sequence_logps(token_logps, mask, self.hparams.get("dpo_ld_alpha")).float(), mask.sum(dim=1)

    def _preference_terms(self, batch: Batch, split: str) -> PreferenceTerms:
        logps, tokens = self._sequence_logps(batch)
        reference = self.reference_logps[split].to(logps.device)[batch["pair_index"]]
        chosen_tokens, rejected_tokens = tokens.chunk(2)
        chosen, rejected = logps.chunk(2)
        return preference_loss(
            chosen, rejected, reference[:, 0], reference[:, 1], beta=self.hparams.dpo_beta, loss_type=self.hparams.dpo_loss,
            label_smoothing=self.hparams.dpo_label_smoothing, chosen_tokens=chosen_tokens, rejected_tokens=rejected_tokens,
        )

    def _preference_training_step(self, batch: Batch) -> torch.Tensor:
        terms = self._preference_terms(batch, "train")
        pairs = batch["pair_index"].numel()
        self.log("train/loss", terms.loss, prog_bar=True, batch_size=pairs)
        for name, value in terms.logged().items():
            self.log(f"train/{name}", value, batch_size=pairs)
        return terms.loss

    @torch.no_grad()
    def _preference_validation(self) -> None:
        """The DPO loss and TRL's metrics on this process's share of the validation pairs."""
        datamodule = self.trainer.datamodule
        if not self._is_preference or not len(datamodule.pair_datasets.get("val", [])):
            return
        if self.trainer.state.fn == "validate":
            self._preference_validate_start()
        with self.trainer.precision_plugin.forward_context():
            for batch in datamodule.pair_batches("val", self.global_rank, self.trainer.world_size):
                batch = {key: value.to(self.device) for key, value in batch.items()}
                terms = self._preference_terms(batch, "val")
                pairs = batch["pair_index"].numel()
                for name, value in {**terms.logged(), "loss": terms.loss}.items():
                    self.val_preference[name.replace("/", "__")].update(value, weight=pairs)
        for key, metric in self.val_preference.items():
            name = key.replace("__", "/")
            self.log(f"val/{'preference_loss' if name == 'loss' else name}", metric.compute())
            metric.reset()

    def _preference_validate_start(self) -> None:
        """`train.py validate`: a preference checkpoint brings its reference; any other start (the
        base, an SFT checkpoint) is itself the reference, so its margins are 0 by definition."""
        if self.reference_logps:
            self._preference_check_resume()
        else:
            val = self.trainer.datamodule.pair_datasets["val"]
            self.reference_logps = {"val": self._sequence_logps_of(self.trainer.datamodule.pair_batches("val"), len(val))}

    # -- checkpoints --------------------------------------------------------------------------------
    def _preference_save(self, ckpt: dict[str, Any]) -> None:
        if self.reference_logps:
            ckpt[REFERENCE_KEY] = {split: logps.cpu() for split, logps in self.reference_logps.items()}

    def _preference_load(self, ckpt: dict[str, Any]) -> None:
        if REFERENCE_KEY in ckpt:
            self.reference_logps = dict(ckpt[REFERENCE_KEY])

    def _preference_check_resume(self) -> None:
        """A resumed run's pairs must be the ones its reference was computed for."""
        datamodule = self.trainer.datamodule
        for split, logps in self.reference_logps.items():
            if logps.shape[0] != len(datamodule.pair_datasets[split]):
                raise UserError(f"the checkpoint's reference covers {logps.shape[0]} {split} pairs, --data.pairs gives "
                                f"{len(datamodule.pair_datasets[split])}: resume or validate with the pairs it was trained on")

