"""The HTML report: the whole fine-grained analysis of a model on a corpus as one self-contained page.

``build_report(model="minilm")`` (``finegrain report`` / ``make demo``) extracts activations, probes
every property layer by layer with control tasks (Hewitt & Liang 2019), ranks neurons (Dalvi et al.
2019), ablates them, describes the top neurons (top examples, Karpathy-style heatmaps, compositional
explanations after Mu & Andreas 2020), compares layers (CKA, Wu et al. 2020), discovers latent
concepts (Dalvi et al. 2022), and, where the attribution / intervention / mediation packages are
present, explains example predictions. Everything lands in ``OUT/index.html``: no CDN, no server.
"""

from finegrain.lazy import lazy_api

# imported on first use: `finegrain --help` must not load matplotlib and torch
__getattr__, __dir__, __all__ = lazy_api(__name__, {"ReportConfig": "finegrain.report.build",
                                                    "build_report": "finegrain.report.build"})
