"""Visualization: Karpathy et al. (2015)-style token heatmaps (HTML/SVG) and matplotlib plots.

All functions take plain data (lists, dicts, arrays), so they do not depend on the analysis modules;
outputs are self-contained (inline styles, data URIs) for the offline HTML report.
"""

from .heatmap import (
    heatmap_html,
    heatmap_multi_html,
    heatmap_svg,
    save_html,
    save_svg,
    value_color,
    value_rgb,
)
from .plots import (
    fig_to_data_uri,
    figure,
    plot_accuracy_vs_neurons,
    plot_activation_histogram,
    plot_layer_accuracy,
    plot_layer_distribution,
    plot_matrix,
    plot_selectivity,
    png_data_uri,
    save_figure,
)

__all__ = [
    "fig_to_data_uri",
    "figure",
    "heatmap_html",
    "heatmap_multi_html",
    "heatmap_svg",
    "plot_accuracy_vs_neurons",
    "plot_activation_histogram",
    "plot_layer_accuracy",
    "plot_layer_distribution",
    "plot_matrix",
    "plot_selectivity",
    "png_data_uri",
    "save_figure",
    "save_html",
    "save_svg",
    "value_color",
    "value_rgb",
]
