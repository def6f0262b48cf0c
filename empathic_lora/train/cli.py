"""The training command line: LightningCLI over the LoRA module and the EmpatheticDialogues data."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentError
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, Logger

from empathic_lora.data import preference_pairs
from empathic_lora.data.datamodule import EmpatheticDialoguesDataModule
from empathic_lora.errors import UserError, run_cli
from empathic_lora.lm import checkpoint_file
from empathic_lora.paths import RUNS, newest_checkpoint
from empathic_lora.train import lightning_internals, policy_start
from empathic_lora.train.callbacks import ExactResume, NonFiniteGuard
from empathic_lora.train.checkpoint_io import SafeCheckpointIO
from empathic_lora.train.lora_module import EmpatheticLoRAModule

log = logging.getLogger(__name__)

# `--ckpt_path` values Lightning resolves itself ("registry:NAME" too); anything else is a file.
LIGHTNING_CKPT_NAMES = ("best", "hpc", "registry")
# The DataModule settings that shape what the model sees: evaluation takes them from the checkpoint.
FORMAT_SETTINGS = ("format", "history_turns", "max_length")

DEFAULT_CALLBACKS = [
    {
        "class_path": "empathic_lora.train.callbacks.ModelCheckpoint",
        "init_args": {
            "monitor": "val/ppl",
            "mode": "min",
            "save_last": True,
            "filename": "best-epoch{epoch}-step{step}",
            "auto_insert_metric_name": False,
        },
    },
]


def default_loggers(root_dir: str) -> list[Logger]:
    """CSV always (metrics.csv feeds the plots), TensorBoard beside it when installed."""
    csv = CSVLogger(root_dir, name=RUNS)
    loggers: list[Logger] = [csv]
    try:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(root_dir, name=RUNS, version=csv.version))
    except ModuleNotFoundError:
        pass
    return loggers


def find_last_checkpoint(root_dir: str) -> str:
    """The newest `last.ckpt` of any run under `root_dir`, for `--ckpt_path last`."""
    found = newest_checkpoint(root_dir)
    if found is None:
        raise UserError(f"--ckpt_path last: no last.ckpt under {Path(root_dir, RUNS)}/version_*/checkpoints")
    return str(found)


class EmpathicCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # One tokenizer, loaded with the base model, is the one the data is encoded with.
        parser.link_arguments("model.tokenizer", "data.tokenizer", apply_on="instantiate")
        parser.set_defaults({"trainer.callbacks": DEFAULT_CALLBACKS, "trainer.precision": "16-mixed", "trainer.max_epochs": 2})

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        typed = args if isinstance(args, list) else sys.argv[1:]
        self._typed_keys = sorted(
            {token.split("=", 1)[0].removeprefix("--") for token in typed if token.startswith(("--model.", "--data."))}
        )
        super().parse_arguments(parser, args)
        # Before LightningCLI reads the checkpoint's hyperparameters (right after this) and before
        # anything is built: "last" is resolved, and a bad file fails in one line, at once.
        config = self.config.get(str(self.config.get("subcommand")), self.config)
        ckpt_path = config.get("ckpt_path")
        if ckpt_path == "last":
            config["ckpt_path"] = ckpt_path = find_last_checkpoint(config["trainer"]["default_root_dir"] or ".")
        self._checkpoint: dict[str, Any] | None = None
        if ckpt_path and str(ckpt_path).split(":")[0] not in LIGHTNING_CKPT_NAMES:
            self._checkpoint = checkpoint_file.read(ckpt_path)
        _check_sources(config, resuming=bool(ckpt_path))

    def _parse_ckpt_path(self) -> None:  # a private hook: see lightning_internals.py
        # LightningCLI copies the checkpoint's hyperparameters over the whole config. That is right
        # for what the user left alone (the adapter's shape), but a flag they typed, such as
        # --model.base_model pointing at a local copy of the same base, must still win; the base
        # signature check then proves the copy really is the same model.
        subcommand = self.config.get("subcommand")
        typed = {key: self.config[f"{subcommand}.{key}"] for key in self._typed_keys}
        super()._parse_ckpt_path()
        if subcommand in ("validate", "test", "predict") and self._checkpoint is not None:
            self._evaluate_as_trained(subcommand)
            # The checkpoint holds the adapter: where its training started need not exist any more.
            self.config[f"{subcommand}.model.init_from"] = None
        for key, value in typed.items():
            self.config[f"{subcommand}.{key}"] = value

    def _evaluate_as_trained(self, subcommand: str) -> None:
        """Evaluate with the conversation format the checkpoint was trained with (its context window
        and length), not whatever the config file says; a typed flag still wins, with a note."""
        recorded = self._checkpoint[checkpoint_file.META_KEY].get("data", {})
        for name in FORMAT_SETTINGS:
            if name not in recorded:
                continue
            key, value = f"data.{name}", recorded[name]
            current = self.config[f"{subcommand}.{key}"]
            if key in self._typed_keys:
                if current != value:
                    log.warning("--%s %s: evaluating with it, although the checkpoint was trained with %s", key, current, value)
                continue
            if current != value:
                log.info("%s: using the checkpoint's %s (the config says %s)", key, value, current)
            self.config[f"{subcommand}.{key}"] = value

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        config = lightning_internals.config_section(self, "trainer")
        if config.get("logger") in (None, True):
            kwargs["logger"] = default_loggers(config.get("default_root_dir") or ".")
        plugins = config.get("plugins") or []
        plugins = plugins if isinstance(plugins, list) else [plugins]
        kwargs["plugins"] = [*plugins, SafeCheckpointIO()]
        return super().instantiate_trainer(**kwargs)


def _check_sources(config: Any, resuming: bool) -> None:
    """The files that flags name, checked before the trainer makes a `version_N` for a run that
    cannot start (the data directory is left to the data module, which names it just as well)."""
    init_from = config.get("model.init_from")
    if init_from and not resuming:
        path = checkpoint_file.resolve(init_from, policy_start.FLAG)
        if not path.exists():
            raise UserError(f"{policy_start.FLAG} {init_from}: no such checkpoint, run directory or exported adapter")
    for key in ("pairs", "val_pairs"):
        source = config.get(f"data.{key}")
        if source and source != preference_pairs.OPPOSITE_EMOTION and not Path(source).expanduser().is_file():
            raise UserError(f"--data.{key} {source}: no such pairs file")


def _log_to_stderr() -> None:
    package = logging.getLogger("empathic_lora")
    # One handler on the current stderr, also when main() runs again in the same process (tests,
    # notebooks): an old one would log twice, or to a stream that has since been closed.
    for old in [h for h in package.handlers if getattr(h, "empathic_cli", False)]:
        package.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.empathic_cli = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    package.addHandler(handler)
    package.setLevel(logging.INFO)


def config_error(error: ArgumentError) -> UserError:
    """jsonargparse's complaint about a flag or config key, as one line naming the key."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    text = re.sub(r'Parser key "([^"]+)":', r"--\1:", text)
    text = re.sub(r"Does not validate against any of the Union subtypes Subtypes: \[(.*?)\] .*Given value: (.*)",
                  r"expected one of \1, got \2", text)
    text = re.sub(r"Expected a (.*?)\. Got value: (.*)", r"expected \1, got \2", text)
    text = re.sub(r"Not of type (\w+): (?:invalid literal for \w+\(\) with base 10|could not convert string to \w+): '(.*)'",
                  r"expected \1, got \2", text)
    text = re.sub(r"Not of type (\w+): (.*?) does not conform to restriction (.*)", r"expected \1 (\3), got \2", text)
    text = text.replace("jsonargparse.typing.", "")
    text = re.sub(r"typing\.Literal\[(.*?)\]", lambda m: " or ".join(m.group(1).split(", ")), text)
    text = text.replace("<class 'NoneType'>", "null")
    text = re.sub(r"<class '([\w.]+)'>", r"\1", text)
    return UserError(f"{text} (python train.py SUBCOMMAND --help lists every option)")


def _cli(args: list[str] | None) -> EmpathicCLI:
    try:
        return EmpathicCLI(
            EmpatheticLoRAModule,
            EmpatheticDialoguesDataModule,
            seed_everything_default=0,
            # Always on: the first resumes mid-epoch exactly, the second stops on a NaN/inf loss.
            trainer_defaults={"callbacks": [ExactResume(), NonFiniteGuard()]},
            # Raise instead of printing the full usage, so a bad key becomes one line (config_error).
            parser_kwargs={"exit_on_error": False},
            args=args,
        )
    except ArgumentError as error:
        raise config_error(error) from None
    except MisconfigurationException as error:
        # Lightning's word on a trainer setting only it can judge (`max_epochs -5`, `accelerator cuda`
        # without a GPU): a user mistake like any other, so one line.
        raise UserError(f"{' '.join(str(error).split())} (the --trainer.* flags and config keys)") from None


def main(args: list[str] | None = None) -> None:
    _log_to_stderr()
    run_cli(lambda: _cli(args))
