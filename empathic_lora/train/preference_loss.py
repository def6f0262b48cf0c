"""Preference losses over sequence log-probabilities: DPO (`sigmoid`), cDPO (`sigmoid` with
`label_smoothing`) and IPO (`ipo`), and the reward statistics TRL logs beside them; and the
sequence log-probabilities themselves, plain or length-desensitized (LD-DPO, `ld_alpha`).

Written by hand because TRL's loss lives inside `DPOTrainer._compute_loss` (a Hugging Face
`Trainer` method that needs its model, accelerator and batch layout); it is a few lines, and
tests/train/test_preference_loss.py checks it against that very method on the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

LossName = Literal["sigmoid", "ipo"]
LOSSES: tuple[str, ...] = ("sigmoid", "ipo")


@dataclass(frozen=True)
class PreferenceTerms:
    """One batch of pairs: the loss to minimise and, per pair, what TRL logs (detached)."""

    loss: torch.Tensor
    chosen_rewards: torch.Tensor  # beta * (log pi(chosen) - log ref(chosen))
    rejected_rewards: torch.Tensor
    chosen_logps: torch.Tensor  # the policy's summed log-probability of each reply (and its eos)
    rejected_logps: torch.Tensor

    def logged(self) -> dict[str, torch.Tensor]:
        """TRL's metric names, with TRL's meaning: batch means over pairs."""
        return {
            "rewards/chosen": self.chosen_rewards.mean(),
            "rewards/rejected": self.rejected_rewards.mean(),
            "rewards/accuracies": (self.chosen_rewards > self.rejected_rewards).float().mean(),
            "rewards/margins": (self.chosen_rewards - self.rejected_rewards).mean(),
            "logps/chosen": self.chosen_logps.detach().mean(),
            "logps/rejected": self.rejected_logps.detach().mean(),
        }


def sequence_logps(token_logps: torch.Tensor, mask: torch.Tensor, ld_alpha: float | None = None) -> torch.Tensor:
    """Each row's log-probability of its reply: `token_logps` and the boolean `mask` of the
    supervised (reply and eos) tokens are (2N, T), the N chosen rows then the N rejected ones.

    With `ld_alpha` (LD-DPO, Liu et al. 2024; TRL's `ld_alpha`), the tokens of a reply past the
    length of the shorter reply of its pair count `ld_alpha` times: the part both replies share
    decides the preference, so a policy cannot win the margin by saying more. 1 is plain DPO,
    0 ignores the longer reply's excess.
    """
    if ld_alpha is None:
        return (token_logps * mask).sum(dim=1)
    position = mask.cumsum(dim=1)
    shared = torch.minimum(*mask.sum(dim=1).chunk(2)).repeat(2)
    weight = torch.where(position <= shared[:, None], 1.0, ld_alpha).to(token_logps.dtype)
    return (token_logps * weight * mask).sum(dim=1)


def preference_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    loss_type: LossName = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_tokens: torch.Tensor | None = None,
    rejected_tokens: torch.Tensor | None = None,
) -> PreferenceTerms:
    """The mean preference loss of a batch of pairs from summed sequence log-probabilities.

    `sigmoid` is DPO (Rafailov et al. 2023); with `label_smoothing` eps > 0 it is conservative DPO
    (Mitchell 2023): the expected DPO loss when each label is flipped with probability eps.
    `ipo` (Azar et al. 2023) is the squared distance of the log-ratio margin from 1 / (2 beta), with
    each reply's log-ratio averaged over its tokens (`chosen_tokens`, `rejected_tokens`), as TRL does
    (its authors confirmed that normalisation with the IPO authors).
    """
    chosen_logratios = chosen_logps - ref_chosen_logps
    rejected_logratios = rejected_logps - ref_rejected_logps
    if loss_type == "sigmoid":
        delta = chosen_logratios - rejected_logratios
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * delta) - label_smoothing * F.logsigmoid(-beta * delta)
    elif loss_type == "ipo":
        if chosen_tokens is None or rejected_tokens is None:
            raise ValueError("the ipo loss needs each reply's token count")
        delta = chosen_logratios / chosen_tokens.clamp(min=1) - rejected_logratios / rejected_tokens.clamp(min=1)
        losses = (delta - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown preference loss {loss_type!r}; known: {', '.join(LOSSES)}")
    return PreferenceTerms(
        losses.mean(), beta * chosen_logratios.detach(), beta * rejected_logratios.detach(), chosen_logps, rejected_logps
    )
