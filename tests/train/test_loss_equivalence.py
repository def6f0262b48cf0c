"""The LM head applied at supervised positions only gives the plain full-logits loss and gradients."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from empathic_lora.data.datamodule import EmpatheticDialoguesDataModule
from empathic_lora.train.lora_module import EmpatheticLoRAModule


@pytest.fixture(scope="module")
def module(distilgpt2_dir: Path) -> EmpatheticLoRAModule:
    module = EmpatheticLoRAModule(str(distilgpt2_dir), random_init=True)
    # lora_B starts at zero, which makes every lora_A gradient zero: give it values so that the
    # gradients of both factors are compared.
    with torch.no_grad():
        for name, parameter in module.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.02)
    return module.train()  # dropout on: the comparison is of the step training runs


def _naive_loss(module: EmpatheticLoRAModule, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits at every position, shifted by one, padding and prompt ignored through -100."""
    logits = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten())


def _optimized_loss(module: EmpatheticLoRAModule, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """What training optimises: `training_step` (`supervised_logits` + cross-entropy)."""
    return module.training_step(batch, 0)


def _loss_and_lora_grads(module: EmpatheticLoRAModule, loss_of: Callable, batch: dict) -> tuple[torch.Tensor, dict]:
    module.zero_grad()
    torch.manual_seed(0)  # the same dropout masks for both computations
    loss = loss_of(module, batch)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in module.model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")  # no Trainer here, nothing to log to
@pytest.mark.parametrize("format", ["seed", "dialogue"])
def test_supervised_logits_loss_and_grads_equal_full_logits(
    module: EmpatheticLoRAModule, ed_dir: Path, format: str
) -> None:
    data = EmpatheticDialoguesDataModule(
        str(ed_dir), format=format, max_length=128, batch_size=8, max_examples=16,
        group_by_length=False, tokenizer=module.tokenizer,
    )
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    supervised = batch["labels"] != -100
    # The batch must hold what the optimisation skips: padding and unsupervised context.
    assert (batch["attention_mask"] == 0).any() and (~supervised & (batch["attention_mask"] == 1)).any()

    loss, grads = _loss_and_lora_grads(module, _optimized_loss, batch)
    naive_loss, naive_grads = _loss_and_lora_grads(module, _naive_loss, batch)

    torch.testing.assert_close(loss, naive_loss, atol=1e-5, rtol=0)
    assert grads.keys() == naive_grads.keys() and any("lora_A" in k for k in grads) and any("lora_B" in k for k in grads)
    for name, grad in grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grad, naive_grads[name], atol=1e-5, rtol=0, msg=name)

