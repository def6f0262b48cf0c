"""`python -m empathic_lora.score PATH [PATH ...]`: one comparison table of replies and runs.

A PATH is one of:

- a replies file (`.jsonl`, one JSON object per line with `reply` and `reference`, and `context`
  and `emotion` when known; a run's samples.jsonl is one): scored with the same reply metrics as
  `train.py test` (`--config` reads them from the same YAML key), one row per file;
- a run directory, its results.json (written by `train.py validate|test`), or the
  `--trainer.default_root_dir` above it (its newest run): its metrics, one row
  per run, runs that differ only by seed aggregated into one row as mean ± sd.

Metrics that are a mean over replies (ROUGE-L, length, intra Distinct) get a 95% bootstrap interval
over the replies (the run's samples.jsonl for a run); corpus-level ones (BLEU, Distinct) have none.

Two PATHs whose replies answer the same examples (the same context and reference) are also
compared pairwise: a paired bootstrap for every metric that is a mean over replies and for the
generic-reply rate, and a sign test (scipy's binomtest) on the EmoAcc hits where one run names
the emotion and the other does not.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.stats import binomtest
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.text import ROUGEScore

from empathic_lora.errors import ArgumentParser, UserError, run_cli
from empathic_lora.evaluate import reply_scoring, results_file, samples_file
from empathic_lora.evaluate.metrics import DEFAULT_REPLY_METRICS, build_reply_metrics, common_opening_share, reply_opening
from empathic_lora.paths import RUNS, newest_run_file

BOOTSTRAP_SEED = 0
REQUIRED_KEYS = ("reply", "reference")
CONFIG_FLAG = "--config model.generation_metrics"
# What was scored and the perplexities first; the reply metrics follow in the order they appear.
LEADING_COLUMNS = ("name", "examples", "replies", "loss", "ppl", "word_ppl", "word_ppl_field")


def reply_metric_specs(configs: Sequence[Path]) -> list[dict[str, Any]]:
    """`model.generation_metrics` as `train.py` resolves it from these config files, in order:
    a list replaces the current one, `generation_metrics+` adds to it."""
    # Only this key is read: LightningCLI's parser would also demand every other key be valid for
    # a training run, which a scorer without a model cannot check.
    specs = list(DEFAULT_REPLY_METRICS)
    for path in configs:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as error:
            raise UserError(f"--config {path}: cannot be read ({error.strerror})") from None
        except yaml.YAMLError as error:
            raise UserError(f"--config {path}: not YAML ({str(error).splitlines()[0]})") from None
        model = data.get("model") if isinstance(data, dict) else None
        if not isinstance(model, dict):
            continue
        if "generation_metrics" in model:
            specs = list(model["generation_metrics"] or DEFAULT_REPLY_METRICS)
        added = model.get("generation_metrics+")
        if added is not None:
            specs += added if isinstance(added, list) else [added]
    return specs


def read_replies(path: Path) -> list[dict[str, Any]]:
    """The replies of a replies file's newest evaluation (`samples_file`), each with string
    `reply` and `reference`."""
    lines = samples_file.read(path, REQUIRED_KEYS)
    if not lines:
        raise UserError(f"{path}: holds no replies")
    return [{"context": None, "emotion": None, **line} for line in samples_file.newest_evaluation(lines)]


def per_reply_metrics(specs: Sequence[dict[str, Any]]) -> MetricCollection:
    """The metrics whose value is a mean over replies: torchmetrics means (length, intra
    Distinct), ROUGE, and any metric class that sets `mean_over_replies = True`."""
    metrics = build_reply_metrics(specs, flag=CONFIG_FLAG)
    means = {name: metric for name, metric in metrics.items(keep_base=True)
             if isinstance(metric, (MeanMetric, ROUGEScore)) or getattr(metric, "mean_over_replies", False)}
    return MetricCollection(means, compute_groups=False)


def per_example_scores(specs: Sequence[dict[str, Any]], lines: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Each reply's own score under every metric that is a mean over replies."""
    metrics = per_reply_metrics(specs)
    if not metrics:
        return {}
    rows = [reply_scoring.score(metrics, [line]) for line in lines]
    return {key: np.array([row[key] for row in rows], dtype=float) for key in rows[0]}


def bootstrap_interval(values: np.ndarray, resamples: int, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def format_value(value: float) -> str:
    return f"{value:.4g}"


def value_cells(values: dict[str, float], per_example: dict[str, np.ndarray], resamples: int) -> dict[str, str]:
    """`value`, or `value [low, high]` where the per-example scores give a bootstrap interval."""
    cells = {}
    for key, value in values.items():
        cells[key] = format_value(value)
        if key in per_example:
            low, high = bootstrap_interval(per_example[key], resamples)
            cells[key] += f" [{format_value(low)}, {format_value(high)}]"
    return cells


def replies_row(path: Path, specs: Sequence[dict[str, Any]], resamples: int) -> tuple[str, dict[str, str]]:
    lines = read_replies(path)
    corpus = reply_scoring.score(build_reply_metrics(specs, flag=CONFIG_FLAG), lines)
    intervals = per_example_scores(specs, lines) if resamples and len(lines) > 1 else {}
    return str(path), {"replies": str(len(lines)), **value_cells(corpus, intervals, resamples)}


def load_results(path: Path) -> tuple[Path, dict[str, Any]]:
    """A run's results.json, given the file, its run directory, or the `--trainer.default_root_dir`
    above it (its newest run: what `--ckpt_path last` and chat's `--checkpoint` also read there)."""
    file = path / results_file.RESULTS_FILE if path.is_dir() else path
    if path.is_dir() and not file.is_file():
        file = newest_run_file(path, results_file.RESULTS_FILE) or file
    if not file.is_file():
        raise UserError(
            f"{path}: no {results_file.RESULTS_FILE} in it or in {RUNS}/version_*/ (`train.py validate|test` writes one in its run directory)"
        )
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{file}: not a results file ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise UserError(f"{file}: not a results file (no 'metrics' object)")
    return file.parent, data


def run_metrics(data: dict[str, Any]) -> dict[str, float]:
    prefix = f"{data.get('stage')}/"
    return {key.removeprefix(prefix): float(value) for key, value in data["metrics"].items()}


def run_row(run_dir: Path, data: dict[str, Any], specs: Sequence[dict[str, Any]], resamples: int) -> dict[str, str]:
    """The run's metrics; intervals from its samples.jsonl where a metric is a mean over replies."""
    metrics = run_metrics(data)
    cells = {"examples": str(data.get("examples", "?")), "replies": str(data.get("generation_samples", "?"))}
    intervals: dict[str, np.ndarray] = {}
    samples = run_dir / samples_file.SAMPLES_FILE
    if resamples and samples.is_file():
        lines = read_replies(samples)
        if len(lines) > 1:
            # only where these replies, scored again, give the run's number (same metric, same sample)
            intervals = {key: values for key, values in per_example_scores(specs, lines).items()
                         if key in metrics and math.isclose(values.mean(), metrics[key], rel_tol=1e-5, abs_tol=1e-7)}
    return {**cells, **value_cells(metrics, intervals, resamples)}


def seed_row(runs: Sequence[dict[str, Any]]) -> dict[str, str]:
    """mean ± sd (sample standard deviation) over runs of one experiment."""
    all_metrics = [run_metrics(run) for run in runs]
    cells = {"examples": str(runs[0].get("examples", "?")), "replies": str(runs[0].get("generation_samples", "?"))}
    for key in all_metrics[0]:
        values = np.array([m[key] for m in all_metrics if key in m])
        cells[key] = f"{format_value(values.mean())} ± {format_value(values.std(ddof=1))}" if len(values) > 1 else format_value(values[0])
    return cells


def table(rows: Sequence[tuple[str, dict[str, str]]]) -> str:
    """Plain text, one row per input, columns in the order the metrics first appear."""
    present = {key for _, cells in rows for key in cells}
    columns = ["name"] + [key for key in LEADING_COLUMNS[1:] if key in present]
    columns += [key for key in dict.fromkeys(key for _, cells in rows for key in cells) if key not in columns]
    body = [[name] + [cells.get(column, "-") for column in columns[1:]] for name, cells in rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(columns, *body)]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [columns, *body])


def paired_lines(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]] | None:
    """The two runs' replies to the same examples, matched by context and reference; None unless
    both answer exactly the same examples."""
    def key(line: dict[str, Any]) -> tuple[Any, Any]:
        return line.get("context"), line["reference"]

    by_key = {key(line): line for line in b}
    if len(a) != len(b) or len(by_key) != len(b) or any(key(line) not in by_key for line in a):
        return None
    return [(line, by_key[key(line)]) for line in a]


def paired_bootstrap_p(size: int, difference: Callable[[np.ndarray], float], resamples: int, seed: int = BOOTSTRAP_SEED) -> float:
    """Two-sided paired bootstrap p-value of a difference between two runs on the same `size`
    examples (Koehn 2004; Berg-Kirkpatrick et al. 2012): `difference(indices)` is B's statistic
    minus A's on those examples; the p-value is the share of resamples whose difference strays from
    the observed one by at least the observed one (the bootstrap distribution shifted to the null)."""
    observed = difference(np.arange(size))
    rng = np.random.default_rng(seed)
    strays = sum(abs(difference(rng.integers(0, size, size=size)) - observed) >= abs(observed) for _ in range(resamples))
    return (strays + 1) / (resamples + 1)


def paired_rows(specs: Sequence[dict[str, Any]], pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]],
                resamples: int) -> list[list[str]]:
    """metric, A, B, B - A, p and the test, for each metric with a per-reply value and the generic-reply rate."""
    a_lines, b_lines = [x for x, _ in pairs], [y for _, y in pairs]
    a_scores, b_scores = per_example_scores(specs, a_lines), per_example_scores(specs, b_lines)
    bootstrap = f"paired bootstrap ({resamples})"
    rows = []
    for name, a in a_scores.items():
        b = b_scores[name]
        if name.endswith("_ceiling"):
            continue  # EmoAcc's ceiling is the classifier's own, the same for both runs
        if name == "emoacc":
            only_a, only_b = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
            p = binomtest(only_b, only_a + only_b).pvalue if only_a + only_b else 1.0
            test = f"sign test ({only_a} A only, {only_b} B only)"
        else:
            p, test = paired_bootstrap_p(len(a), lambda index: b[index].mean() - a[index].mean(), resamples), bootstrap
        rows.append([name, format_value(a.mean()), format_value(b.mean()), format_value(b.mean() - a.mean()), f"{p:.3g}", test])
    a_openings, b_openings = ([reply_opening(line["reply"]) for line in lines] for lines in (a_lines, b_lines))

    def generic_difference(index: np.ndarray) -> float:
        return common_opening_share([b_openings[i] for i in index]) - common_opening_share([a_openings[i] for i in index])

    generic_a, generic_b = common_opening_share(a_openings), common_opening_share(b_openings)
    p = paired_bootstrap_p(len(pairs), generic_difference, resamples)
    rows.append(["generic_rate", format_value(generic_a), format_value(generic_b), format_value(generic_b - generic_a), f"{p:.3g}", bootstrap])
    return rows


def entry_replies(entry: Path | list[tuple[Path, dict[str, Any]]]) -> list[dict[str, Any]] | None:
    """The replies behind a table row: a replies file's, or a single run's samples.jsonl."""
    if isinstance(entry, Path):
        return read_replies(entry)
    samples = entry[0][0] / samples_file.SAMPLES_FILE
    return read_replies(samples) if len(entry) == 1 and samples.is_file() else None


def print_paired(entries: Sequence[Path | list[tuple[Path, dict[str, Any]]]], specs: Sequence[dict[str, Any]], resamples: int) -> None:
    a, b = (entry_replies(entry) for entry in entries)
    if a is None or b is None:
        return  # an experiment over seeds, or a run without samples.jsonl: no replies to pair
    pairs = paired_lines(a, b)
    if pairs is None:
        print("\nno paired comparison: the two do not hold replies to the same examples")
        return
    print(f"\npaired, B (second) against A (first), on the same {len(pairs)} examples:")
    print(table([(row[0], dict(zip(("A", "B", "B - A", "p", "test"), row[1:]))) for row in paired_rows(specs, pairs, resamples)]))


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m empathic_lora.score", description=__doc__.split("\n\n")[0],
                       epilog="python -m empathic_lora.score --probe --checkpoint RUN: the repetition probe on a trained model "
                       "(--probe --help lists its options)")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="replies .jsonl files, run directories or results.json files")
    p.add_argument("--config", type=Path, action="append", default=[],
                   help="a train.py config whose model.generation_metrics (and generation_metrics+) to use; repeatable")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="bootstrap resamples for the 95%% intervals (default 1000; 0: no intervals)")
    args = p.parse_args(argv)
    if args.bootstrap < 0:
        raise UserError(f"--bootstrap {args.bootstrap}: must be >= 0")
    specs = reply_metric_specs(args.config)
    build_reply_metrics(specs, flag=CONFIG_FLAG)  # a bad entry fails before any scoring
    # One entry per replies file and per experiment (its runs over seeds), in the order given.
    entries: list[Path | list[tuple[Path, dict[str, Any]]]] = []
    experiments: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for path in args.paths:
        if not path.exists():
            raise UserError(f"{path}: no such file or directory")
        if path.is_file() and path.name != results_file.RESULTS_FILE:
            entries.append(path)
            continue
        run_dir, data = load_results(path)
        key = results_file.experiment_key(data)
        if key not in experiments:
            experiments[key] = []
            entries.append(experiments[key])
        experiments[key].append((run_dir, data))
    rows: list[tuple[str, dict[str, str]]] = []
    for entry in entries:
        if isinstance(entry, Path):
            rows.append(replies_row(entry, specs, args.bootstrap))
        elif len(entry) == 1:
            rows.append((str(entry[0][0]), run_row(entry[0][0], entry[0][1], specs, args.bootstrap)))
        else:
            seeds = ", ".join(str(data.get("seed")) for _, data in entry)
            rows.append((f"{entry[0][0]} +{len(entry) - 1} (seeds {seeds})", seed_row([data for _, data in entry])))
    print(table(rows))
    if len(entries) == 2 and args.bootstrap:
        print_paired(entries, specs, args.bootstrap)


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
