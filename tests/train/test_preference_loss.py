"""The preference losses against TRL's own implementation (`DPOTrainer._compute_loss`, TRL's
private method: if it moves, this test names it), on the same sequence log-probabilities."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from trl.trainer import dpo_trainer as trl_dpo  # the dev extra's trl

from empathic_lora.train.preference_loss import preference_loss, sequence_logps

PAIRS, WIDTH = 5, 7


class _Accelerator:
    device = torch.device("cpu")

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    gather_for_metrics = gather

    def unwrap_model(self, model: object) -> object:
        return model


def _inputs(seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """TRL's batch layout ([chosen; rejected] rows, a completion mask) and per-token log-probs."""
    generator = torch.Generator().manual_seed(seed)
    completion = torch.zeros(2 * PAIRS, WIDTH + 1, dtype=torch.long)
    for row in range(2 * PAIRS):
        start = int(torch.randint(1, WIDTH - 2, (1,), generator=generator))
        completion[row, start : start + int(torch.randint(1, WIDTH + 1 - start, (1,), generator=generator))] = 1
    per_token = -torch.rand(2 * PAIRS, WIDTH, generator=generator) * 3 * completion[:, 1:]
    ref = -torch.rand(2 * PAIRS, generator=generator) * 10
    inputs = {"input_ids": torch.zeros_like(completion), "attention_mask": torch.ones_like(completion),
              "completion_mask": completion, "ref_chosen_logps": ref[:PAIRS], "ref_rejected_logps": ref[PAIRS:]}
    return inputs, per_token, ref


def _trl(inputs: dict[str, torch.Tensor], per_token: torch.Tensor, loss_type: str, beta: float,
         ld_alpha: float | None = None) -> tuple[float, dict[str, float]]:
    """TRL's loss and logged metrics for these inputs: its method on a stand-in trainer and model."""
    shape = per_token.shape
    outputs = SimpleNamespace(log_probs=per_token, entropy=torch.zeros(shape), mean_logits=torch.zeros(shape),
                              is_top1=torch.zeros(shape, dtype=torch.bool))
    model = SimpleNamespace(training=True)
    trainer = SimpleNamespace(
        model=model, accelerator=_Accelerator(), aux_loss_enabled=False, ld_alpha=ld_alpha, precompute_ref_logps=True,
        f_divergence_type="reverse_kl", loss_types=[loss_type], loss_weights=[1.0], beta=beta, label_smoothing=0.0,
        _metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1, use_weighting=False,
    )
    loss = trl_dpo.DPOTrainer._compute_loss(trainer, lambda **_: outputs, inputs, False)
    return float(loss), {k: v[-1] for k, v in trainer._metrics["train"].items()}


def _ours(inputs: dict[str, torch.Tensor], per_token: torch.Tensor, loss_type: str, beta: float, smoothing: float = 0.0,
          ld_alpha: float | None = None):
    mask = inputs["completion_mask"][:, 1:].bool()  # TRL's shifted mask: the positions of per_token
    logps, tokens = sequence_logps(per_token, mask, ld_alpha), inputs["completion_mask"].sum(dim=1)
    return preference_loss(logps[:PAIRS], logps[PAIRS:], inputs["ref_chosen_logps"], inputs["ref_rejected_logps"],
                           beta=beta, loss_type=loss_type, label_smoothing=smoothing,
                           chosen_tokens=tokens[:PAIRS], rejected_tokens=tokens[PAIRS:])


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_loss_and_logged_metrics_equal_trl(loss_type: str, beta: float) -> None:
    inputs, per_token, _ = _inputs(seed=int(beta * 10))
    trl_loss, trl_metrics = _trl(inputs, per_token, loss_type, beta)
    ours = _ours(inputs, per_token, loss_type, beta)
    assert float(ours.loss) == pytest.approx(trl_loss, rel=1e-6)
    logged = {k: float(v) for k, v in ours.logged().items()}
    assert set(logged) <= set(trl_metrics)
    assert logged == pytest.approx({k: trl_metrics[k] for k in logged}, rel=1e-6, abs=1e-7)
    assert 0 < logged["rewards/accuracies"] < 1  # the inputs separate the metrics: not all one way


@pytest.mark.parametrize("ld_alpha", [0.0, 0.3, 1.0])
def test_length_desensitized_logps_equal_trls_ld_alpha(ld_alpha: float) -> None:
    """LD-DPO: TRL weights the tokens past the pair's shorter reply inside `_compute_loss`; the
    same inputs through `sequence_logps` give its loss and its logged log-probabilities."""
    inputs, per_token, _ = _inputs(seed=5)
    lengths = inputs["completion_mask"].sum(dim=1)
    assert (lengths[:PAIRS] != lengths[PAIRS:]).any()  # some pairs differ in length: the weighting shows
    trl_loss, trl_metrics = _trl(inputs, per_token, "sigmoid", 0.1, ld_alpha)
    ours = _ours(inputs, per_token, "sigmoid", 0.1, ld_alpha=ld_alpha)
    assert float(ours.loss) == pytest.approx(trl_loss, rel=1e-6)
    for name in ("logps/chosen", "logps/rejected", "rewards/margins"):
        assert float(ours.logged()[name]) == pytest.approx(trl_metrics[name], rel=1e-6, abs=1e-7), name
    plain = float(_ours(inputs, per_token, "sigmoid", 0.1).loss)
    assert (float(ours.loss) == pytest.approx(plain)) == (ld_alpha == 1.0)


def test_cdpo_is_trl_dpo_with_each_label_flipped_with_probability_eps() -> None:
    """TRL 1.x's `sigmoid` has no label smoothing any more; conservative DPO is by definition the
    expected DPO loss when a pair's label is flipped with probability eps (Mitchell 2023), i.e.
    TRL's loss on the pairs and on the swapped pairs, mixed (1 - eps) : eps."""
    inputs, per_token, ref = _inputs(seed=3)
    swapped = {**inputs, "completion_mask": inputs["completion_mask"].roll(PAIRS, 0),
               "ref_chosen_logps": ref[PAIRS:], "ref_rejected_logps": ref[:PAIRS]}
    straight, _ = _trl(inputs, per_token, "sigmoid", 0.2)
    flipped, _ = _trl(swapped, per_token.roll(PAIRS, 0), "sigmoid", 0.2)
    for eps in (0.1, 0.3):
        assert float(_ours(inputs, per_token, "sigmoid", 0.2, eps).loss) == pytest.approx((1 - eps) * straight + eps * flipped, rel=1e-6)
    assert straight != pytest.approx(flipped)


def test_equal_policy_and_reference_give_ln2_and_zero_rewards() -> None:
    logps = torch.tensor([-3.0, -7.5])
    terms = preference_loss(logps, logps.flip(0), logps, logps.flip(0), beta=0.1)
    assert float(terms.loss) == pytest.approx(math.log(2), abs=1e-7)
    assert float(terms.logged()["rewards/margins"]) == 0.0 and float(terms.logged()["rewards/accuracies"]) == 0.0


def test_ipo_needs_token_counts() -> None:
    with pytest.raises(ValueError, match="token count"):
        preference_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1), beta=0.1, loss_type="ipo")
