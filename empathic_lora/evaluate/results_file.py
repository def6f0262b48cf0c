"""results.json: what a paper needs from one `validate` or `test` run, in one file beside metrics.csv.

Every metric of the run, the split and how many examples were scored, the resolved config, the
checkpoint, the code's git commit and the versions of the libraries that shape the numbers.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

RESULTS_FILE = "results.json"
CONFIG_FILE = "config.yaml"  # LightningCLI's SaveConfigCallback writes it into the run directory
VERSIONED = ("torch", "lightning", "transformers", "peft")
# The config keys that differ between runs of the same experiment without changing it: the seed
# and where things are. Runs whose configs agree on everything else are repetitions over seeds.
RUN_SPECIFIC_KEYS = ("seed_everything", "ckpt_path", "config")
RUN_SPECIFIC_TRAINER_KEYS = ("default_root_dir", "logger")
SPLIT_OF_STAGE = {"val": "valid", "test": "test"}


def git_commit(where: Path) -> str | None:
    """The commit of the repository holding `where` (`+dirty` with uncommitted changes), if any."""
    try:
        commit = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return commit.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def read_config(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / CONFIG_FILE
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None


def training_config(checkpoint: str | None) -> dict[str, Any] | None:
    """The config of the run that wrote `checkpoint` (runs/.../version_N/checkpoints/X.ckpt)."""
    if not checkpoint:
        return None
    return read_config(Path(checkpoint).resolve().parent.parent)


def build(
    run_dir: Path, stage: str, metrics: dict[str, float], examples: int, generation_samples: int, checkpoint: str | None
) -> dict[str, Any]:
    config = read_config(run_dir)
    trained = training_config(checkpoint)
    seed = (trained or config or {}).get("seed_everything")
    return {
        "stage": stage,
        "split": SPLIT_OF_STAGE.get(stage, stage),
        "examples": examples,
        "generation_samples": generation_samples,
        "metrics": metrics,
        "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None,
        "seed": seed,
        "config": config,
        "training_config": trained,
        "git_commit": git_commit(Path(__file__).parent),
        "versions": versions(),
    }


def write(run_dir: Path, results: dict[str, Any]) -> Path:
    path = run_dir / RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def _without_run_specifics(config: dict[str, Any] | None) -> dict[str, Any] | None:
    if config is None:
        return None
    kept = {k: v for k, v in config.items() if k not in RUN_SPECIFIC_KEYS}
    if isinstance(kept.get("trainer"), dict):
        kept["trainer"] = {k: v for k, v in kept["trainer"].items() if k not in RUN_SPECIFIC_TRAINER_KEYS}
    return kept


def experiment_key(results: dict[str, Any]) -> str:
    """Equal for runs that differ only by seed (and where their files are): evaluation config,
    training config, split and stage."""
    return json.dumps(
        [results.get("stage"), results.get("split"), _without_run_specifics(results.get("config")),
         _without_run_specifics(results.get("training_config"))],
        sort_keys=True, default=str,
    )
