"""Startup hook: registers the plugin the moment ``basicsr`` is first imported.

BasicSR has no plugin entry points, so ``s2former_plugin.pth`` (installed into site-packages) imports this module
at interpreter start. It only puts a tiny finder on ``sys.meta_path``; nothing heavy is imported until some code
imports ``basicsr``. Then the finder wraps basicsr's loader so that:

1. the compatibility shims that must exist *before* basicsr's own ``__init__`` runs are installed
   (``compat.before_basicsr_import``), then
2. basicsr is imported as usual, then
3. ``s2former_plugin.register()`` applies the remaining fixes and registers the plugin's classes.

Spawned DataLoader workers and torchrun workers are fresh interpreters, so they run the ``.pth`` line too.
Set ``S2FORMER_PLUGIN_DISABLE=1`` to import basicsr untouched.
"""

import importlib.abc
import os
import sys

_TARGET = 'basicsr'


class _LoaderWithPlugin(importlib.abc.Loader):
    """Wraps basicsr's own loader; every other attribute is delegated to it."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        from s2former_plugin import compat

        compat.before_basicsr_import()
        self._loader.exec_module(module)
        # basicsr is complete in sys.modules now: registering may import its submodules freely.
        import s2former_plugin

        s2former_plugin.register()


class _BasicsrFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != _TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and not isinstance(spec.loader, _LoaderWithPlugin):
                    spec.loader = _LoaderWithPlugin(spec.loader)
                return spec
        return None


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (idempotent; a no-op if basicsr is already imported)."""
    if os.environ.get('S2FORMER_PLUGIN_DISABLE') == '1':
        return
    if _TARGET in sys.modules:
        import s2former_plugin

        s2former_plugin.register()
        return
    if not any(isinstance(f, _BasicsrFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _BasicsrFinder())


install()
