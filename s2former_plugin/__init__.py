"""UDR-S2Former as a BasicSR plugin.

This module is imported at interpreter start by the ``.pth`` hook (see ``_hook.py``), so it must stay light:
nothing here imports torch or basicsr until :func:`register` is called.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

__version__ = '0.1.0'
__all__ = ['register', '__version__']

_SUBPACKAGES = {'archs': '_arch', 'losses': '_loss', 'models': '_model', 'data': '_dataset', 'metrics': '_metric'}
_registered = False


def import_modules_with_suffix(package: str, suffix: str) -> list:
    """Import every module of ``package`` whose name ends with ``suffix`` (BasicSR's discovery convention)."""
    pkg = importlib.import_module(package)
    names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name.endswith(suffix))
    return [importlib.import_module(f'{package}.{name}') for name in names]


def register() -> None:
    """Apply the basicsr compatibility fixes and register the plugin's classes in basicsr's registries.

    Idempotent. Where ``spandrel`` is already imported, S2Former is added to its registry too
    (:func:`s2former_plugin.spandrel_support.install`). Importing ``basicsr`` calls this automatically once the
    plugin is installed; call it yourself only where the import hook is not active (e.g. ``python -S``).
    """
    global _registered
    if _registered:
        return
    _registered = True
    from . import compat

    compat.apply()
    for sub, suffix in _SUBPACKAGES.items():
        import_modules_with_suffix(f'{__name__}.{sub}', suffix)
    # spandrel's loader learns S2Former where spandrel is already imported; importing it here would add seconds to
    # every start, so elsewhere call s2former_plugin.spandrel_support.install() (docs/ecosystem.md).
    if 'spandrel' in sys.modules:
        from . import spandrel_support

        spandrel_support.install()
