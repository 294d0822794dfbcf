"""The one way a figure is written: a non-interactive backend (build machines have no display) and an atomic
save, so a killed stage never leaves half a PNG that DVC would cache."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from humpback.storage.records import atomic_path  # after the backend is chosen


def save_figure(fig, out: str | Path, dpi: int = 100) -> None:
    """Lay out, write `fig` as PNG to `out` atomically, and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)


def figure_png(fig, dpi: int = 100) -> bytes:
    """Lay out `fig`, return it as PNG bytes (for a page that carries its figures inline), and close it."""
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()
