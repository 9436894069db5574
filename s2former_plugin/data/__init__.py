"""Modules named `*_dataset.py` are imported by :func:`s2former_plugin.register` (registry decorators)."""
