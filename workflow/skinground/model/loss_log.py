"""The training's loss log: the logged steps of ``Trainer``'s history as a CSV and a plot."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence

from skinground.core.io import atomic_path

LOSS_COLUMNS = ("step", "epoch", "loss", "learning_rate", "grad_norm")


def loss_rows(log_history: Sequence[Mapping]) -> list[dict]:
    """The training-loss entries of ``trainer.state.log_history``, one per logged step."""
    rows = []
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            rows.append({k: entry.get(k) for k in LOSS_COLUMNS})
    return rows


def write_loss_csv(path: str | os.PathLike, rows: Sequence[Mapping]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(LOSS_COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in LOSS_COLUMNS})


def plot_loss(path: str | os.PathLike, rows: Sequence[Mapping], title: str = "") -> None:
    """Training loss (and learning rate) against the step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["loss"] for r in rows], color="C0", label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (answer tokens)")
    ax.set_title(title or "LoRA fine-tuning")
    if rows and any(r.get("learning_rate") is not None for r in rows):
        ax2 = ax.twinx()
        ax2.plot(steps, [r.get("learning_rate") for r in rows], color="C1", alpha=0.6,
                 linestyle="--", label="learning rate")
        ax2.set_ylabel("learning rate")
        ax2.grid(False)
        ax2.set_ylim(bottom=0)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
