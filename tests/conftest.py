"""Shared pytest fixtures (helpers for subprocess runs live in helpers.py), and the guard that the code under test
is this checkout's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ci_guard import pytest_runtest_logreport, pytest_sessionfinish, pytest_terminal_summary  # noqa: F401

DATA = Path(__file__).resolve().parent / 'data'
CHECKOUT_PACKAGE = Path(__file__).resolve().parents[1] / 's2former_plugin'


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to run when ``s2former_plugin`` (in this process or in the tests' subprocesses) is not this checkout's.

    The startup hook (``s2former_plugin.pth``) imports the *installed* package before pytest puts the checkout on
    ``sys.path``: with a regular (non-editable) install, or an editable install of another checkout, the tests
    would silently exercise that code instead of this one.
    """
    from helpers import clean_env

    import s2former_plugin

    fix = 'install this checkout with `pip install -e .` (or run with PYTHONPATH=<checkout>)'
    found = Path(s2former_plugin.__file__).resolve().parent
    if found != CHECKOUT_PACKAGE:
        raise pytest.UsageError(f'tests would import s2former_plugin from {found}, not from {CHECKOUT_PACKAGE}: {fix}')
    code = 'import s2former_plugin; print(s2former_plugin.__file__)'
    proc = subprocess.run([sys.executable, '-c', code], env=clean_env(), capture_output=True, text=True, timeout=60)
    found = Path(proc.stdout.strip() or '?').resolve().parent
    if proc.returncode != 0 or found != CHECKOUT_PACKAGE:
        raise pytest.UsageError(
            f'subprocesses of the tests would import s2former_plugin from {found}, not from {CHECKOUT_PACKAGE}: {fix}'
        )


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


@pytest.fixture(scope='module')
def tiny_weights(tmp_path_factory) -> tuple[Path, str]:
    """A small-preset S2Former's weights (``good.pth``), the same with one NaN (``nan.pth``) and with an all-inf
    ``params_ema`` (``inf_ema.pth``), in one folder; returned with the name of the tensor made non-finite."""
    from s2former_plugin.archs.s2former_arch import S2Former

    torch.manual_seed(0)
    sd = S2Former(preset='small').state_dict()
    d = tmp_path_factory.mktemp('w')
    torch.save(sd, d / 'good.pth')
    bad = dict(sd)
    key = next(k for k, v in sd.items() if v.is_floating_point())
    bad[key] = sd[key].clone()
    bad[key].view(-1)[0] = float('nan')
    torch.save(bad, d / 'nan.pth')
    torch.save({'params': sd, 'params_ema': {**sd, key: torch.full_like(sd[key], float('inf'))}}, d / 'inf_ema.pth')
    return d, key


@pytest.fixture(autouse=True)
def _keep_the_multiprocessing_start_method():
    """``compat.init_dist`` sets the process-wide start method to spawn (as torchrun's ranks need); in the test process
    that would make later DataLoader workers spawn and fail to pickle test-local datasets."""
    import multiprocessing

    before = multiprocessing.get_start_method(allow_none=True)
    yield
    if multiprocessing.get_start_method(allow_none=True) != before:
        multiprocessing.set_start_method(before, force=True)
