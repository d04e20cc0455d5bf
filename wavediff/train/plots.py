"""Figures for TensorBoard and reports (matplotlib, no display needed)."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def mel_figure(*mels: np.ndarray, titles: Sequence[str] = ()):  # -> matplotlib Figure
    """Mel spectrograms ``(n_mels, frames)`` stacked vertically on a shared colour scale."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    lo = min(float(np.min(m)) for m in mels)
    hi = max(float(np.max(m)) for m in mels)
    fig, axes = plt.subplots(len(mels), 1, figsize=(8, 2.2 * len(mels)), squeeze=False)
    for i, mel in enumerate(mels):
        ax = axes[i, 0]
        im = ax.imshow(mel, origin="lower", aspect="auto", interpolation="none", vmin=lo, vmax=hi)
        ax.set_ylabel("mel bin")
        if i < len(titles):
            ax.set_title(titles[i], fontsize=9)
        fig.colorbar(im, ax=ax, pad=0.01)
    axes[-1, 0].set_xlabel("frame")
    fig.tight_layout()
    return fig
