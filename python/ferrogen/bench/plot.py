"""``ferrogen bench --plot FILE.png``: the table as a picture, one panel per strategy and in
each, per (model, batch) row, the ms per token of the forward pass alone, ferrogen and
transformers side by side. matplotlib is the optional extra ``ferrogen[plot]``."""

from __future__ import annotations

from typing import Optional

from .rows import Row

# forward-only grey (the floor both pay), ferrogen orange, transformers blue
SIDES = (("forward only", "floor_ms", "#9e9e9e"), ("ferrogen", "ours_ms", "#e66101"),
         ("transformers", "theirs_ms", "#1f78b4"))


def require_matplotlib() -> None:
    """Fails before any timing when the extra is missing, naming the flag and the fix."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SystemExit("--plot: needs matplotlib: pip install 'ferrogen[plot]' (or pip install matplotlib)") from None


def plot(rows: list[Row], path: str, title: Optional[str] = None) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    strategies = list(dict.fromkeys(r.strategy for r in rows))
    fig, axes = plt.subplots(1, len(strategies), figsize=(max(4.0, 3.2 * len(strategies)), 4.2), squeeze=False)
    width = 0.27
    for ax, strategy in zip(axes[0], strategies):
        mine = [r for r in rows if r.strategy == strategy]
        for k, (label, field, colour) in enumerate(SIDES):
            xs = [i + (k - 1) * width for i in range(len(mine))]
            values = [getattr(r, field) for r in mine]
            bars = ax.bar([x for x, v in zip(xs, values) if v is not None],
                          [v for v in values if v is not None], width, label=label, color=colour)
            ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=1)
        ax.set_xticks(range(len(mine)), [f"{r.model}\nbatch {r.batch}" for r in mine], fontsize=7)
        ax.set_title(strategy)
        ax.set_ylabel("ms per generated token")
        ax.margins(y=0.15)
    axes[0][0].legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
