"""Modules named `*_model.py` here are imported by :func:`s2former_plugin.register` so their registry decorators run."""
