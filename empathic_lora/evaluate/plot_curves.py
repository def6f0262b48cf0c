"""Training curves as a picture: `python -m empathic_lora.plot RUN_DIR [--out FILE.png]`.

Reads the run's `metrics.csv` (the CSV logger's) and draws the train loss per step (raw and
smoothed) and the validation loss and perplexity per epoch (per step when validation ran within
epochs).
"""

from __future__ import annotations

import csv
from pathlib import Path

from empathic_lora.errors import ArgumentParser, UserError, run_cli

METRICS_FILE = "metrics.csv"


def read_series(metrics_csv: Path, key: str, x_key: str) -> tuple[list[float], list[float]]:
    """(x, y) of every row where `key` was logged."""
    xs, ys = [], []
    with metrics_csv.open(newline="") as f:
        for row in csv.DictReader(f):
            if row.get(key) not in (None, ""):
                xs.append(float(row[x_key]))
                ys.append(float(row[key]))
    return xs, ys


def smooth(values: list[float], weight: float) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average, debiased so it starts at the data."""
    smoothed, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        smoothed.append(average / (1 - weight**i))
    return smoothed


def plot_run(run_dir: Path, out: Path, smoothing: float = 0.6) -> Path:
    """Draw the run's curves into `out` (PNG) and return it."""
    metrics_csv = run_dir / METRICS_FILE
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    if not metrics_csv.is_file():
        raise UserError(f"{run_dir} has no {METRICS_FILE}: pass a run directory such as runs/quickstart/lightning_logs/version_0")
    if not 0 <= smoothing < 1:
        raise UserError(f"--smoothing must be in [0, 1), got {smoothing}")
    steps, train_loss = read_series(metrics_csv, "train/loss", "step")
    validations = {key: read_series(metrics_csv, key, "epoch") for key in ("val/loss", "val/ppl")}
    val_steps, _ = read_series(metrics_csv, "val/loss", "step")
    if not train_loss and not any(ys for _, ys in validations.values()):
        raise UserError(f"{metrics_csv} holds no train/loss, val/loss or val/ppl values yet")
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ModuleNotFoundError:
        raise UserError("plotting needs matplotlib: pip install 'empathic_lora[plot]'") from None

    # Validation is drawn per epoch when it ran once per epoch; against steps when it ran within
    # epochs (val_check_interval) or only once, where an epoch axis would mislead.
    epochs = validations["val/loss"][0]
    per_epoch = len(epochs) >= 2 and len(set(epochs)) == len(epochs)
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2), layout="constrained")
    train_axis, loss_axis, ppl_axis = axes
    if train_loss:
        train_axis.plot(steps, train_loss, color="tab:blue", alpha=0.25, label="train loss")
        train_axis.plot(steps, smooth(train_loss, smoothing), color="tab:blue", label=f"train loss (smoothed {smoothing})")
    for axis, key, color in ((loss_axis, "val/loss", "tab:orange"), (ppl_axis, "val/ppl", "tab:green")):
        xs, ys = validations[key]
        if ys:
            xs = [x + 1 for x in xs] if per_epoch else val_steps
            axis.plot(xs, ys, marker="o", color=color, label=key)
        axis.set_xlabel("epoch" if per_epoch else "step")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    train_axis.set_xlabel("step")
    for axis, label in zip(axes, ("loss (nats/token)", "loss (nats/token)", "perplexity (per token)")):
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        if axis.has_data():
            axis.legend()
        else:
            axis.text(0.5, 0.5, "not logged", ha="center", va="center", transform=axis.transAxes)
    train_axis.set_title("training loss")
    loss_axis.set_title("validation loss")
    ppl_axis.set_title("validation perplexity")
    figure.suptitle(str(run_dir))
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out


def main(args: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m empathic_lora.plot", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory holding metrics.csv (lightning_logs/version_N)")
    parser.add_argument("--out", type=Path, default=None, help="PNG to write (default: RUN_DIR/curves.png)")
    parser.add_argument("--smoothing", type=float, default=0.6, help="train-loss smoothing weight in [0, 1)")
    options = parser.parse_args(args)
    out = run_cli(lambda: plot_run(options.run_dir, options.out or options.run_dir / "curves.png", options.smoothing))
    print(out)


if __name__ == "__main__":
    main()
