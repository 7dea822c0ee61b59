"""Reading a transformer's internals in its own vocabulary, and its attention.

* :func:`logit_lens` — every layer's residual through the final norm and the unembedding (nostalgebraist 2020);
* :func:`direct_logit_attribution` — the embedding's, each block's and each head's direct contribution to a
  logit, through the final norm with its scale frozen (Elhage et al. 2021);
* :func:`attention_patterns` — every head's attention weights as one :class:`AttentionPatterns` cache, with
  summary scores and heatmaps.
"""

from finegrain.lazy import lazy_api

# the API and the module that defines it: imported on first use, so that a command line
# that only parses arguments (``finegrain --help``) does not load torch

_API = {
    "AttentionPatterns": "finegrain.lens.attention",
    "attention_patterns": "finegrain.lens.attention",
    "DLAResult": "finegrain.lens.lens",
    "LogitLensResult": "finegrain.lens.lens",
    "direct_logit_attribution": "finegrain.lens.lens",
    "logit_lens": "finegrain.lens.lens",
}

__getattr__, __dir__, __all__ = lazy_api(__name__, _API)
