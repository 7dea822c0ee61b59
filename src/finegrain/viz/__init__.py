"""Visualization: Karpathy et al. (2015)-style token heatmaps (HTML/SVG) and matplotlib plots.

All functions take plain data (lists, dicts, arrays), so they do not depend on the analysis modules;
outputs are self-contained (inline styles, data URIs) for the offline HTML report. Figures are built on
matplotlib's Agg canvas (:func:`figure`, :func:`save_figure`): no pyplot, no backend switch. Names load on first
use, so importing a package that draws does not import matplotlib.
"""

from finegrain.lazy import lazy_api

_API = {
    "plot_faithfulness_bins": "finegrain.viz.attribution",
    "plot_method_comparison": "finegrain.viz.attribution",
    "plot_word_heatmap": "finegrain.viz.attribution",
    "plot_cluster_sizes": "finegrain.viz.describe",
    "plot_formula": "finegrain.viz.describe",
    "plot_latent_concepts": "finegrain.viz.describe",
    "plot_prediction_explanation": "finegrain.viz.describe",
    "plot_redundancy": "finegrain.viz.describe",
    "plot_score_curves": "finegrain.viz.describe",
    "plot_tcav": "finegrain.viz.describe",
    "plot_token_heatmap": "finegrain.viz.describe",
    "generation_html": "finegrain.viz.generation",
    "plot_generation_matrix": "finegrain.viz.generation",
    "escape": "finegrain.viz.html",
    "token_label": "finegrain.viz.html",
    "heatmap_html": "finegrain.viz.heatmap",
    "heatmap_multi_html": "finegrain.viz.heatmap",
    "heatmap_svg": "finegrain.viz.heatmap",
    "save_html": "finegrain.viz.heatmap",
    "save_svg": "finegrain.viz.heatmap",
    "token_layout": "finegrain.viz.heatmap",
    "value_color": "finegrain.viz.heatmap",
    "value_rgb": "finegrain.viz.heatmap",
    "plot_control": "finegrain.viz.intervene",
    "plot_effect_heatmap": "finegrain.viz.intervene",
    "plot_expert_ap": "finegrain.viz.intervene",
    "plot_model_ablation": "finegrain.viz.intervene",
    "plot_sweep": "finegrain.viz.intervene",
    "plot_attention": "finegrain.viz.lens",
    "plot_dla": "finegrain.viz.lens",
    "plot_token_grid": "finegrain.viz.lens",
    "plot_patching": "finegrain.viz.patching",
    "fig_to_data_uri": "finegrain.viz.plots",
    "figure": "finegrain.viz.plots",
    "plot_accuracy_vs_neurons": "finegrain.viz.plots",
    "plot_activation_histogram": "finegrain.viz.plots",
    "plot_layer_accuracy": "finegrain.viz.plots",
    "plot_layer_distribution": "finegrain.viz.plots",
    "plot_matrix": "finegrain.viz.plots",
    "plot_selectivity": "finegrain.viz.plots",
    "png_data_uri": "finegrain.viz.plots",
    "save_figure": "finegrain.viz.plots",
    "plot_ablation": "finegrain.viz.probing",
    "plot_minimal_set": "finegrain.viz.probing",
    "plot_outliers": "finegrain.viz.probing",
    "plot_ranking": "finegrain.viz.probing",
}

__getattr__, __dir__, __all__ = lazy_api(__name__, _API)
