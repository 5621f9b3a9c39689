"""Saving matplotlib figures as the PNG files every plotting tool writes."""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_figures(named_figures, output_dir, dpi=150):
    """Write each ``(name, figure)`` with a figure as ``<name>.png``, closing it; returns ``{name: path}``."""
    os.makedirs(output_dir, exist_ok=True)
    written = {}
    for name, figure in named_figures:
        if figure is None:
            continue
        path = os.path.join(output_dir, f"{name}.png")
        figure.savefig(path, dpi=dpi)
        plt.close(figure)
        written[name] = path
    return written
