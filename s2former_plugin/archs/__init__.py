"""Modules named `*_arch.py` are imported by :func:`s2former_plugin.register` (registry decorators)."""
