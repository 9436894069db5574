"""Modules named `*_model.py` are imported by :func:`s2former_plugin.register` (registry decorators)."""
