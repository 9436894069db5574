"""Building pyiqa metrics offline: refused downloads, weights_dir, weights-only loading, and other threads untouched."""

import fractions
import math
import os
import threading

import numpy as np
import pytest
import torch
from basicsr.metrics import calculate_metric
from helpers import photo

from s2former_plugin.metrics import protocols, pyiqa_offline
from s2former_plugin.metrics.protocols import MetricUnavailable, compute


def _pair(seed=0, shape=(24, 32, 3)):
    rng = np.random.default_rng(seed)
    gt = rng.integers(40, 200, shape, dtype=np.uint8)
    pred = np.clip(gt.astype(int) + rng.integers(-20, 21, shape), 0, 255).astype(np.uint8)
    return pred, gt


def _brisque_svm(seed):
    """A small SVM in the format of pyiqa's BRISQUE weights: (support vector coefficients, support vectors)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(5, generator=gen, dtype=torch.float64), torch.rand(5, 36, generator=gen)


def _niqe_params_writer():
    """A stand-in for the network: writes pyiqa's NIQE parameter file from the model basicsr ships."""
    import basicsr.metrics
    import scipy.io

    npz = np.load(os.path.join(os.path.dirname(basicsr.metrics.__file__), 'niqe_pris_params.npz'))
    return lambda dst: scipy.io.savemat(
        dst, {'mu_prisparam': npz['mu_pris_param'], 'cov_prisparam': npz['cov_pris_param']}
    )


def _needs_unpickling(path):
    torch.save({'w': torch.ones(1), 'obj': fractions.Fraction(1, 3)}, path)  # outside the weights-only allow-list
    return path


def test_the_names_protocols_exports_are_the_offline_modules():
    assert protocols.get_pyiqa_metric is pyiqa_offline.get_pyiqa_metric
    assert protocols.MetricUnavailable is pyiqa_offline.MetricUnavailable
    assert protocols.UnknownMetric is pyiqa_offline.UnknownMetric
    assert protocols.ALLOW_DOWNLOAD_ENV == pyiqa_offline.ALLOW_DOWNLOAD_ENV == 'S2FORMER_ALLOW_DOWNLOAD'
    from s2former_plugin.errors import S2FormerError

    assert issubclass(MetricUnavailable, S2FormerError) and issubclass(MetricUnavailable, RuntimeError)
    assert issubclass(protocols.UnknownMetric, S2FormerError) and issubclass(protocols.UnknownMetric, ValueError)


def test_weights_metric_unavailable_offline_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    monkeypatch.delenv(protocols.ALLOW_DOWNLOAD_ENV, raising=False)
    pred, gt = _pair()
    with pytest.raises(MetricUnavailable, match='not available offline'):
        compute('lpips', pred, gt)
    nan = calculate_metric({'img': pred, 'img2': gt}, {'type': 'pyiqa', 'metric': 'lpips', 'on_unavailable': 'nan'})
    assert math.isnan(nan)
    assert not any(p.is_file() for p in tmp_path.rglob('*'))
    with pytest.raises(protocols.UnknownMetric, match="unknown metric 'not-a-metric'"):
        compute('not-a-metric', pred, gt)


def test_pyiqa_weight_files_are_loaded_weights_only(tmp_path):
    pickled = tmp_path / 'needs_unpickling.pth'  # an object outside torch's weights-only allow-list
    torch.save({'w': torch.ones(1), 'obj': fractions.Fraction(1, 3)}, pickled)
    plain = tmp_path / 'plain.pth'
    torch.save({'w': torch.ones(1)}, plain)
    with pyiqa_offline.weights_only_loading():
        with pytest.raises(Exception, match='(?i)weights.only'):
            torch.load(pickled, weights_only=False)  # what pyiqa asks for is overridden
        assert torch.load(plain, weights_only=False)['w'].item() == 1
    assert torch.load(pickled, weights_only=False)['obj'] == fractions.Fraction(1, 3)  # restored afterwards
    assert protocols.get_pyiqa_metric('psnr', test_y_channel=True) is not None


def test_weights_dir_supplies_a_weight_file(tmp_path, monkeypatch):
    import pyiqa

    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.delenv(protocols.ALLOW_DOWNLOAD_ENV, raising=False)
    weights = tmp_path / 'weights'
    weights.mkdir()
    gen = torch.Generator().manual_seed(0)
    # A small SVM in the format of pyiqa's BRISQUE weights: (support vector coefficients, support vectors).
    svm = (torch.randn(5, generator=gen, dtype=torch.float64), torch.rand(5, 36, generator=gen))
    torch.save(svm, weights / 'brisque_svm_weights.pth')
    img = photo(2)
    value = compute('brisque', img, weights_dir=str(weights))
    ref = pyiqa.create_metric('brisque', device='cpu', pretrained_model_path=str(weights / 'brisque_svm_weights.pth'))
    rgb = torch.from_numpy(img[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    assert value == pytest.approx(float(ref(rgb)), rel=1e-6)
    assert not (tmp_path / 'torch_home').exists()


def test_weights_dir_with_downloads_allowed_fetches_into_the_real_cache(tmp_path, monkeypatch):
    import os

    import basicsr.metrics
    import scipy.io
    import torch.hub

    cache = tmp_path / 'torch_home'
    monkeypatch.setenv('TORCH_HOME', str(cache))
    monkeypatch.setenv(protocols.ALLOW_DOWNLOAD_ENV, '1')
    weights = tmp_path / 'weights_allowed'
    weights.mkdir()
    npz = np.load(os.path.join(os.path.dirname(basicsr.metrics.__file__), 'niqe_pris_params.npz'))
    fetched = []

    def fake_download(url, dst, *args, **kwargs):  # stands in for the network: writes a NIQE parameter file
        fetched.append(dst)
        scipy.io.savemat(dst, {'mu_prisparam': npz['mu_pris_param'], 'cov_prisparam': npz['cov_pris_param']})

    monkeypatch.setattr(torch.hub, 'download_url_to_file', fake_download)
    monkeypatch.setattr('pyiqa.utils.download_util.download_url_to_file', fake_download)
    gen = torch.Generator().manual_seed(1)
    svm = (torch.randn(5, generator=gen, dtype=torch.float64), torch.rand(5, 36, generator=gen))
    torch.save(svm, weights / 'brisque_svm_weights.pth')
    assert math.isfinite(compute('brisque', photo(0), weights_dir=str(weights)))  # from weights_dir, no download
    assert math.isfinite(compute('niqe_pyiqa', photo(0), weights_dir=str(weights)))  # not there: downloaded
    assert fetched == [str(cache / 'hub' / 'pyiqa' / 'niqe_modelparameters.mat')]  # kept in the cache, not lost


def test_a_refusal_names_the_file_the_folders_and_the_variable_and_prints_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.delenv(protocols.ALLOW_DOWNLOAD_ENV, raising=False)
    weights = tmp_path / 'refusal_weights'
    weights.mkdir()
    hub = tmp_path / 'torch_home' / 'hub'
    for metric, file in (('lpips', 'alexnet-owt-7be5be79.pth'), ('niqe_pyiqa', 'niqe_modelparameters.mat')):
        with pytest.raises(MetricUnavailable) as info:  # torchvision's and pyiqa's download paths
            protocols.check_metric(metric, weights_dir=str(weights))
        message = str(info.value)
        assert message.startswith(f'needs {file}: weights not available offline')
        assert f'looked in {weights}, {hub / "checkpoints"}, {hub / "pyiqa"};' in message
        assert 'set S2FORMER_ALLOW_DOWNLOAD=1' in message
    assert capsys.readouterr().out == ''  # no 'Downloading ...' line before a refusal
    assert not (tmp_path / 'torch_home').exists()
    assert os.listdir(weights) == []


def test_a_weight_file_that_needs_unpickling_makes_the_metric_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.delenv(protocols.ALLOW_DOWNLOAD_ENV, raising=False)
    weights = tmp_path / 'pickled_weights'
    weights.mkdir()
    torch.save((*_brisque_svm(2), fractions.Fraction(1, 3)), weights / 'brisque_svm_weights.pth')
    with pytest.raises(MetricUnavailable, match='(?i)weights.only'):
        compute('brisque', photo(0), weights_dir=str(weights))
    assert not (tmp_path / 'torch_home').exists()


def test_weights_only_loading_is_scoped_to_its_own_thread(tmp_path):
    pickled = _needs_unpickling(tmp_path / 'needs_unpickling.pth')
    inside, outside = threading.Event(), threading.Event()
    seen = {}

    def other():
        assert inside.wait(30)
        seen['obj'] = torch.load(pickled, weights_only=False)['obj']  # full unpickling, as asked
        outside.set()

    thread = threading.Thread(target=other)
    thread.start()
    with pyiqa_offline.weights_only_loading():
        inside.set()
        assert outside.wait(30)
        with pytest.raises(Exception, match='(?i)weights.only'):
            torch.load(pickled, weights_only=False)
    thread.join(30)
    assert seen['obj'] == fractions.Fraction(1, 3)


def test_a_build_in_progress_leaves_other_threads_alone(tmp_path, monkeypatch, capsys):
    import pyiqa.archs.arch_util
    import torch.hub

    cache = tmp_path / 'torch_home'
    monkeypatch.setenv('TORCH_HOME', str(cache))
    monkeypatch.setenv(protocols.ALLOW_DOWNLOAD_ENV, '1')
    weights = tmp_path / 'concurrent_weights'  # empty: the NIQE file is "downloaded"
    weights.mkdir()
    pickled = _needs_unpickling(tmp_path / 'needs_unpickling.pth')
    write_params = _niqe_params_writer()
    entered, release = threading.Event(), threading.Event()
    seen, result = {}, {}

    def blocking_download(url, dst, *args, **kwargs):  # the build waits here, inside its sandbox
        seen['hub'] = torch.hub.get_dir()
        seen['dst'] = dst
        try:
            torch.load(pickled, weights_only=False)
        except Exception as exc:  # noqa: BLE001 - the refusal is what is checked below
            seen['load'] = exc
        pyiqa.archs.arch_util.print('pyiqa line inside the build')
        entered.set()
        assert release.wait(60)
        write_params(dst)

    monkeypatch.setattr('pyiqa.utils.download_util.download_url_to_file', blocking_download)

    def build():
        try:
            result['value'] = compute('niqe_pyiqa', photo(0), weights_dir=str(weights))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            result['error'] = exc

    builder = threading.Thread(target=build)
    builder.start()
    try:
        assert entered.wait(60), result
        # This thread, while the other one is building: everything as usual.
        assert torch.load(pickled, weights_only=False)['obj'] == fractions.Fraction(1, 3)
        assert torch.hub.get_dir() == str(cache / 'hub')
        print('printed while a metric is built')
        pyiqa.archs.arch_util.print('pyiqa line outside the build')
        state = tmp_path / 'state.pth'
        torch.save({'w': torch.arange(3.0)}, state)
        downloaded = tmp_path / 'downloads' / 'state.pth'
        downloaded.parent.mkdir()
        torch.hub.download_url_to_file(state.as_uri(), str(downloaded), progress=False)
        assert downloaded.read_bytes() == state.read_bytes()
        loaded = torch.hub.load_state_dict_from_url(state.as_uri(), model_dir=str(tmp_path / 'hub_dl'), progress=False)
        assert torch.equal(loaded['w'], torch.arange(3.0))
        assert (tmp_path / 'hub_dl' / 'state.pth').is_file()
    finally:
        release.set()
        builder.join(60)
    assert not builder.is_alive()
    assert 'error' not in result, result
    assert math.isfinite(result['value'])
    # The build itself was sandboxed: its own hub folder, weights-only loading, quiet pyiqa.
    assert seen['hub'] != str(cache / 'hub') and os.path.basename(seen['hub']).startswith('s2former_hub_')
    assert not os.path.exists(seen['hub'])  # removed after the build
    assert isinstance(seen['load'], Exception) and 'weights' in str(seen['load']).lower()
    assert seen['dst'] == str(cache / 'hub' / 'pyiqa' / 'niqe_modelparameters.mat')  # into the real cache
    out = capsys.readouterr().out
    assert 'printed while a metric is built' in out and 'pyiqa line outside the build' in out
    assert 'pyiqa line inside the build' not in out
    # The one 'Downloading' line is this thread's own torch.hub download; the build's stayed quiet.
    assert [line for line in out.splitlines() if 'Downloading' in line] == [
        f'Downloading: "{state.as_uri()}" to {tmp_path / "hub_dl" / "state.pth"}'
    ]
    assert torch.hub.get_dir() == str(cache / 'hub')
