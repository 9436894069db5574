"""Shared pytest fixtures (helpers for subprocess runs live in helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ci_guard import pytest_runtest_logreport, pytest_sessionfinish, pytest_terminal_summary  # noqa: F401

DATA = Path(__file__).resolve().parent / 'data'


@pytest.fixture(scope='session')
def parity_fixture() -> dict:
    """Outputs of the official implementation (see ../shared/README.md), copied into tests/data/."""
    return torch.load(DATA / 'official_small_seed1.pt', map_location='cpu', weights_only=True)


@pytest.fixture(scope='session')
def vgg19_file(tmp_path_factory) -> Path:
    """A torchvision-format VGG19 state dict with random weights (only the layers the perceptual loss reads)."""
    gen = torch.Generator().manual_seed(0)
    state = {
        'features.0.weight': torch.randn(64, 3, 3, 3, generator=gen) * 0.1,
        'features.0.bias': torch.randn(64, generator=gen) * 0.01,
        'features.2.weight': torch.randn(64, 64, 3, 3, generator=gen) * 0.05,
        'features.2.bias': torch.randn(64, generator=gen) * 0.01,
    }
    path = tmp_path_factory.mktemp('vgg') / 'vgg19-dcbb9e9d.pth'
    torch.save(state, path)
    return path
