"""Helpers more than one test folder uses (tests/ is on pytest's pythonpath): runs, data and archives."""

from __future__ import annotations

import csv
import hashlib
import inspect
import io
import shutil
import tarfile
from pathlib import Path

import pytest
import torch

from empathic_lora.data.raw_csv import FIELDS, SAMPLE_DIR
from empathic_lora.train.cli import main
from empathic_lora.train.lora_module import EmpatheticLoRAModule

# A two-turn split in the raw layout, for archives and downloads.
CSV = ",".join(FIELDS) + "\nc0,1,sad,a situation,0,I feel low_comma_ really,,\nc0,2,sad,a situation,1,I am sorry.,,\n"


def train_error(capsys: pytest.CaptureFixture, tmp_path: Path, *args: str, writes_nothing: bool = True) -> str:
    """Run `train.py fit` on the offline tiny config in-process; its error line, after asserting that
    it failed as a user mistake should: exit code 2, exactly one `error:` line, no traceback, and
    (unless told otherwise) no run directory written."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", "configs/tiny.yaml", "--trainer.max_steps", "1", "--trainer.enable_progress_bar",
              "false", "--trainer.default_root_dir", str(tmp_path / "runs"), *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert "Traceback" not in err, err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [err.splitlines()[-1]], err
    assert not writes_nothing or not (tmp_path / "runs").exists()  # refused before a run directory was made
    return err.splitlines()[-1]


def sample_data_dir(tmp_path: Path, **replace: bytes) -> Path:
    """A copy of the shipped sample (the official layout), with some files replaced."""
    data = tmp_path / "data"
    shutil.copytree(SAMPLE_DIR, data)
    for name, content in replace.items():
        (data / f"{name}.csv").write_bytes(content)
    return data


def newest_run(root: Path) -> Path:
    """The newest run under a default_root_dir."""
    return max((root / "lightning_logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))


def logged_values(run: Path) -> dict[str, float]:
    """Every value logged in a run, the last one per key."""
    values: dict[str, float] = {}
    with (run / "metrics.csv").open() as f:
        for row in csv.DictReader(f):
            values.update({k: float(v) for k, v in row.items() if v not in ("", None) and k not in ("epoch", "step")})
    return values


def make_archive(path: Path, members: dict[str, str], link: tuple[str, str] | None = None) -> str:
    """A .tar.gz of `members` (name -> text), optionally with a symlink; its sha256."""
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link[0])
            info.type, info.linkname = tarfile.SYMTYPE, link[1]
            tar.addfile(info)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def official_layout() -> dict[str, str]:
    return {f"empatheticdialogues/{name}": CSV for name in ("train.csv", "valid.csv", "test.csv")}


def lightning_module(ckpt_path: Path) -> EmpatheticLoRAModule:
    """The LightningModule of a checkpoint, rebuilt from its hyperparameters with its weights (eval
    mode): for tests of training code. Chat, serve and export load without Lightning
    (`session.trained_model.load_checkpoint`)."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    accepted = inspect.signature(EmpatheticLoRAModule).parameters
    module = EmpatheticLoRAModule(**{k: v for k, v in ckpt["hyper_parameters"].items() if k in accepted})
    module.on_load_checkpoint(ckpt)
    module.load_state_dict(ckpt["state_dict"], strict=False)
    return module.eval()
