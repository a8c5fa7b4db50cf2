"""How robustmsa talks to a terminal user: one line per distinct warning, in every process."""

from __future__ import annotations

import sys
import warnings

_SHOWN: set[str] = set()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """One line per distinct warning (libraries reset warnings' own 'once' registry)."""
    text = str(message)
    if text not in _SHOWN:
        _SHOWN.add(text)
        print(f"robustmsa: warning: {text}", file=sys.stderr)


def install_warning_printer() -> None:
    warnings.simplefilter("always")
    warnings.showwarning = _show_warning
