"""Baselines that every probe accuracy is shown beside (issue 14): majority class, word-type lookup and
the control task, and the paired bootstrap that decides "above baseline".

They are implemented in :mod:`finegrain.probe.baselines`, because :func:`finegrain.probe.probe_layers`
puts them beside every accuracy and the probe package sits below evaluate; this module is their home in
the evaluation API (the same names).
"""

from finegrain.probe.baselines import *  # noqa: F403  (the re-export is the point of this module)
from finegrain.probe.baselines import __all__  # noqa: F401
