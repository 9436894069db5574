"""The wheel: built from the sdist by ``python -m build``, clean for ``twine check``, and working when installed into
a fresh virtual environment (its dependencies seen through a path file, nothing downloaded): the startup hook
registers the plugin on ``import basicsr``, one training iteration runs, then ``infer`` on its checkpoint."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from helpers import REPO, clean_env, tiny_s2former_options, write_paired_folder, write_yaml

import s2former_plugin

# What the sdist is made of (setup.py lists the package and carries the hook); copied so that the build's egg-info
# and build/ folders are never written into the checkout.
SOURCES = ('setup.py', 'pyproject.toml', 'README.md', 'LICENSE', 's2former_plugin.pth', 's2former_plugin')


def _run(args: list, cwd: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=clean_env(**env), capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f'{args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    return proc


def test_license_is_the_apache_text_setup_declares():
    text = (REPO / 'LICENSE').read_text()
    assert text.lstrip().startswith('Apache License') and 'Version 2.0, January 2004' in text
    assert 'END OF TERMS AND CONDITIONS' in text and len(text.splitlines()) > 190  # the full text
    assert "license='Apache-2.0'" in (REPO / 'setup.py').read_text()


def test_version_lives_in_one_place():
    setup_text = (REPO / 'setup.py').read_text()
    assert 'version=read_version()' in setup_text and not re.search(r"version=['\"]", setup_text)
    assert re.fullmatch(r'\d+\.\d+\.\d+', s2former_plugin.__version__)


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_trains_and_infers(tmp_path, vgg19_file):
    pytest.importorskip('build')
    pytest.importorskip('twine')
    src = tmp_path / 'src'
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        else:
            shutil.copy2(REPO / name, src / name)
    dist = tmp_path / 'dist'
    _run([sys.executable, '-m', 'build', '--no-isolation', '--outdir', dist, src], tmp_path)  # sdist, then wheel
    version = s2former_plugin.__version__
    wheel, sdist = dist / f's2former_plugin-{version}-py3-none-any.whl', dist / f's2former_plugin-{version}.tar.gz'
    assert wheel.is_file() and sdist.is_file()
    twine = _run([sys.executable, '-m', 'twine', 'check', '--strict', wheel, sdist], tmp_path)
    assert twine.stdout.count('PASSED') == 2

    # A fresh venv whose dependencies come from this venv through a path file (no .pth of that venv is run there:
    # a path line adds a folder to sys.path, it does not process the folder's own .pth files, so this checkout's
    # editable install stays out). The wheel is installed without an index or dependencies.
    venv = tmp_path / 'venv'
    _run([sys.executable, '-m', 'venv', '--without-pip', venv], tmp_path)
    py = venv / 'bin' / 'python'
    fresh_site = Path(
        _run([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], tmp_path).stdout.strip()
    )
    (fresh_site / 'project_deps.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    pip = [sys.executable, '-m', 'pip', '--python', py, 'install', '--no-deps', '--no-index', '--no-cache-dir']
    _run([*pip, '--force-reinstall', wheel], tmp_path, PYTHONPATH='')  # no checkout on the path: nothing to skip
    assert (fresh_site / 's2former_plugin.pth').is_file()

    work = tmp_path / 'work'
    work.mkdir()
    env = {'PYTHONPATH': ''}  # clean_env puts the checkout on the path: not here
    code = (
        'import sys, s2former_plugin, basicsr; '
        'from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY; '
        'print(s2former_plugin.__file__); print(s2former_plugin.__version__); '
        "print('S2Former' in ARCH_REGISTRY._obj_map, 'S2FormerModel' in MODEL_REGISTRY._obj_map)"
    )
    lines = _run([py, '-c', code], work, **env).stdout.split()
    assert Path(lines[0]).resolve().is_relative_to(fresh_site.resolve()), lines[0]  # the wheel's, not the checkout's
    assert lines[1:] == [version, 'True', 'True']  # registered by the startup hook alone

    opt = tiny_s2former_options(write_paired_folder(work / 'data', n=2), vgg19_file, name='wheel', total_iter=1)
    opt['train']['total_iter'] = 1
    opt['logger']['save_checkpoint_freq'] = 1
    opt['val']['val_freq'] = 10
    write_yaml(work / 'tiny.yml', opt)
    _run([py, '-m', 'basicsr.train', '-opt', 'tiny.yml'], work, **env)
    weights = work / 'experiments' / 'wheel' / 'models' / 'net_g_latest.pth'
    assert weights.is_file()
    infer = [py, '-m', 's2former_plugin.infer', '--weights', weights, '--input', work / 'data' / 'lq']
    proc = _run([*infer, '--output', work / 'out', '--config', work / 'tiny.yml', '--no-progress'], work, **env)
    assert 'infer: 2/2 images' in proc.stdout
    assert sorted(p.name for p in (work / 'out').glob('*.png')) == ['000.png', '001.png']
