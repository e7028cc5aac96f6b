"""The book's plotting defaults and the figure-caption helper."""
from __future__ import annotations

import matplotlib as mpl

__all__ = ["use_style", "caption", "PALETTE"]

# Colour-blind-safe palette (Okabe & Ito), in the order the chapters use for methods.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]


def use_style() -> None:
    """Apply the book's matplotlib defaults: readable sizes, light grid, no top/right spines."""
    mpl.rcParams.update(
        {
            "figure.figsize": (6.4, 3.6),
            "figure.dpi": 110,
            "savefig.dpi": 150,
            "savefig.bbox": "tight",
            "font.size": 10,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.prop_cycle": mpl.cycler(color=PALETTE),
            "legend.frameon": False,
            "lines.linewidth": 1.8,
        }
    )


def caption(text: str) -> None:
    """Show a figure caption sentence under the last figure (italic Markdown in a notebook)."""
    if not text or not text.strip():
        raise ValueError("a caption needs a sentence")
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display

        if get_ipython() is not None:
            display(Markdown(f"*Figure.* {text.strip()}"))
            return
    except ImportError:  # pragma: no cover - IPython is a dependency via ipykernel
        pass
    print(f"Figure. {text.strip()}")
