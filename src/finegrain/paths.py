"""Where finegrain caches what it computes when it is asked to: one directory per kind of artefact under one
root. Library calls write only where they are told (``cache_dir=`` parameters); this is the documented
default the command lines pass (and the annotated built-in corpora use)."""

from __future__ import annotations

import os
from pathlib import Path

#: the environment variable that moves the whole cache
CACHE_ENV = "FINEGRAIN_CACHE"


def cache_dir(sub: str | None = None) -> Path:
    """The cache directory of ``sub`` (``"corpora"``, ``"explain"``, ...; ``None``: the root):
    ``$FINEGRAIN_CACHE/<sub>``, else ``$XDG_CACHE_HOME/finegrain/<sub>``, else ``~/.cache/finegrain/<sub>``
    (the XDG base directory convention). Nothing is created: the caller makes the directory when it writes."""
    root = os.environ.get(CACHE_ENV)
    if root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "finegrain"
    return base / sub if sub else base


__all__ = ["CACHE_ENV", "cache_dir"]
