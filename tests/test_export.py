"""ONNX export: one file of the small preset for every size, onnxruntime equal to PyTorch, infer with the file,
one-line errors for bad files, and the tracing-time size computations equal to the eager ones."""

import copy
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import write_mixed_images

from s2former_plugin import export, infer
from s2former_plugin.archs import s2former_blocks as blocks
from s2former_plugin.archs import s2former_ops as ops
from s2former_plugin.archs import s2former_ranking as udr
from s2former_plugin.archs.padding import _traced_pad_to_multiple
from s2former_plugin.archs.s2former_arch import S2Former
from s2former_plugin.checkpoint import save_safetensors
from s2former_plugin.onnx_backend import OnnxError, OnnxNetwork, export_onnx, output_names, require

DATA = Path(__file__).resolve().parent / 'data'

# Sizes (N, H, W) run through one exported file: the traced 64x64, odd sizes (padded inside the network), a batch.
SIZES = [(1, 64, 64), (1, 37, 53), (2, 97, 66), (1, 5, 130)]


@pytest.fixture(scope='module')
def net():
    torch.manual_seed(0)
    return S2Former(preset='small').eval()


@pytest.fixture(scope='module')
def files(net, tmp_path_factory):
    """The small preset's checkpoint and its export with every output (through the command, with --check)."""
    d = tmp_path_factory.mktemp('export')
    torch.save({'params_ema': net.state_dict()}, d / 'net_g.pth')
    save_safetensors(net, d / 'net_g.safetensors')  # records the configuration: no --config needed
    rc = export.main(['--weights', str(d / 'net_g.safetensors'), '--output', str(d / 'net.onnx'), '--outputs', 'all'])
    assert rc == 0
    return {'pth': d / 'net_g.pth', 'safetensors': d / 'net_g.safetensors', 'onnx': d / 'net.onnx'}


def test_one_file_runs_every_size_equal_to_pytorch(net, files):
    onnx_net = OnnxNetwork(str(files['onnx']), threads=1)
    assert onnx_net.output_names == output_names('all') and onnx_net.metadata['outputs'] == 'all'
    net64 = copy.deepcopy(net).double()
    gen = torch.Generator().manual_seed(1)
    for n, h, w in SIZES:
        x = torch.rand(n, 3, h, w, generator=gen)
        with torch.no_grad():
            ref_out, ref_unc = net(x, return_all=True)
            ref64 = net64(x.double(), return_all=True)
        got_out, got_unc = onnx_net(x, return_all=True)
        ref, got = [*ref_out, *ref_unc], [*got_out, *got_unc]
        assert [t.shape for t in got] == [t.shape for t in ref], (n, h, w)
        assert got[0].shape == (n, 3, h, w)
        diff = torch.cat([(r - g).abs().flatten() for r, g in zip(ref, got)])
        assert diff.mean() <= 1e-5, (n, h, w, diff.mean())
        # The max: float32 rounding (and near-tied rankings it flips) against the exact (float64) maths is of the
        # same size for onnxruntime as for PyTorch itself, so the two runtimes differ by no more than that.
        exact = [*ref64[0], *ref64[1]]
        err_torch = max((r.double() - e).abs().max().item() for r, e in zip(ref, exact))
        err_onnx = max((g.double() - e).abs().max().item() for g, e in zip(got, exact))
        assert diff.max() <= err_torch + err_onnx + 1e-6
        assert err_onnx <= 4 * err_torch + 1e-5, (n, h, w, err_onnx, err_torch)


def test_export_check_and_final_output(net, files, tmp_path, capsys):
    path = tmp_path / 'final.onnx'
    (tmp_path / 'net.yml').write_text('preset: small\n')
    argv = ['--weights', str(files['pth']), '--output', str(path), '--check', '--config', str(tmp_path / 'net.yml')]
    assert export.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count(' ok') == 3 and 'check 1x37x53' in out
    onnx_net = OnnxNetwork(str(path))
    assert onnx_net.output_names == ['image'] and not onnx_net.has_uncertainty
    x = torch.rand(1, 3, 29, 41)
    with torch.no_grad():
        assert (onnx_net(x) - net(x)).abs().mean() <= 1e-5
    with pytest.raises(OnnxError, match='--outputs all'):
        onnx_net(x, return_all=True)
    # infer refuses --save-uncertainty with it before writing anything
    img = tmp_path / 'a.png'
    cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
    argv = ['--weights', str(path), '--input', str(img), '--output', str(tmp_path / 'o'), '--save-uncertainty']
    assert infer.main(argv) == 2
    assert 'no uncertainty output' in capsys.readouterr().err and not (tmp_path / 'o').exists()


@pytest.mark.parametrize('tile', ['0', '24'])
def test_infer_with_onnx_writes_the_checkpoints_images(files, tmp_path, tile):
    imgs = write_mixed_images(tmp_path / 'in')
    common = ['--input', str(tmp_path / 'in'), '--tile', tile, '--tile-overlap', '8', '--save-uncertainty']
    for kind in ('pth', 'onnx'):
        rc = infer.main(['--weights', str(files[kind]), *common, '--output', str(tmp_path / kind), '--no-progress'])
        assert rc == 0
    for name, img in imgs.items():
        a = cv2.imread(str(tmp_path / 'pth' / name), cv2.IMREAD_UNCHANGED).astype(np.int64)
        b = cv2.imread(str(tmp_path / 'onnx' / name), cv2.IMREAD_UNCHANGED).astype(np.int64)
        assert a.shape == b.shape == img.shape, name
        assert np.abs(a - b).max() <= 1 if img.dtype == np.uint8 else np.abs(a - b).max() <= 2, name  # rounding
        if img.ndim == 3 and img.shape[2] == 4:
            np.testing.assert_array_equal(b[..., 3], img[..., 3])
        ua = cv2.imread(str(tmp_path / 'pth' / 'uncertainty' / name)).astype(np.int64)
        ub = cv2.imread(str(tmp_path / 'onnx' / 'uncertainty' / name)).astype(np.int64)
        assert ua.shape == ub.shape and np.abs(ua - ub).mean() <= 1.0, name


def _tiny_graph(path, shape):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info('x', TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info('y', TensorProto.FLOAT, shape)
    graph = helper.make_graph([helper.make_node('Identity', ['x'], ['y'])], 'g', [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)], ir_version=8), str(path))


def test_bad_onnx_files_one_line_errors(files, tmp_path, capsys):
    img = tmp_path / 'a.png'
    cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
    corrupt, truncated = tmp_path / 'corrupt.onnx', tmp_path / 'truncated.onnx'
    corrupt.write_bytes(b'not an onnx model at all')
    truncated.write_bytes(files['onnx'].read_bytes()[:5000])
    _tiny_graph(tmp_path / 'vector.onnx', ['n', 3])
    _tiny_graph(tmp_path / 'fixed.onnx', [1, 3, 64, 64])
    expected = {
        corrupt: 'not a valid ONNX model',
        truncated: 'not a valid ONNX model',
        tmp_path / 'vector.onnx': 'expected one float32 N x C x H x W input',
        tmp_path / 'fixed.onnx': 'fixed size',
        tmp_path / 'missing.onnx': 'file not found',
    }
    for path, message in expected.items():
        rc = infer.main(['--weights', str(path), '--input', str(img), '--output', str(tmp_path / 'out')])
        err = capsys.readouterr().err
        assert rc == 2, path
        assert err.count('\n') == 1 and message in err and str(path) in err, err
        assert not (tmp_path / 'out').exists()
    # An ONNX file takes no --config (it holds its network).
    argv = ['--weights', str(files['onnx']), '--input', str(img), '--output', str(tmp_path / 'out'), '--config', 'x']
    assert infer.main(argv) == 2 and '--config' in capsys.readouterr().err


def test_export_bad_arguments_one_line(files, tmp_path, capsys):
    cases = [
        (['--weights', str(tmp_path / 'none.pth'), '--output', str(tmp_path / 'a.onnx')], 'file not found'),
        (['--weights', str(files['pth']), '--output', str(tmp_path / 'a.pth')], 'must end in .onnx'),
        (
            ['--weights', str(files['safetensors']), '--output', str(tmp_path / 'a.onnx'), '--opset', '15'],
            '--opset: 15',
        ),
    ]
    for argv, message in cases:
        assert export.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and message in err, err
    assert not (tmp_path / 'a.onnx').exists() and not (tmp_path / 'a.pth').exists()


def test_missing_extra_named_in_one_line(files, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # as if not installed
    with pytest.raises(OnnxError, match=r"pip install 's2former_plugin\[export\]'"):
        require('onnxruntime')
    img = tmp_path / 'a.png'
    cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
    assert infer.main(['--weights', str(files['onnx']), '--input', str(img), '--output', str(tmp_path / 'o')]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and "pip install 's2former_plugin[export]'" in err
    assert export.main(['--weights', str(files['safetensors']), '--output', str(tmp_path / 'b.onnx')]) == 2
    assert 'onnxruntime' in capsys.readouterr().err and not (tmp_path / 'b.onnx').exists()


# ---------------------------------------------------------------------------------- the configuration exported
@pytest.fixture(scope='module')
def four_heads(tmp_path_factory):
    """A net whose bottleneck has 4 heads (not the paper's 16), as BasicSR saves it and as safetensors records it."""
    torch.manual_seed(11)
    net = S2Former(preset='small', num_heads=(1, 2, 4, 8, 4)).eval()
    d = tmp_path_factory.mktemp('heads')
    torch.save({'params_ema': net.state_dict()}, d / 'net_g.pth')
    save_safetensors(net, d / 'net_g.safetensors')
    (d / 'opt.yml').write_text('network_g:\n  type: S2Former\n  preset: small\n  num_heads: [1, 2, 4, 8, 4]\n')
    (d / 'default.yml').write_text('preset: small\n')
    return net, d


def test_export_refuses_a_head_count_the_weights_do_not_record(four_heads, tmp_path, capsys):
    """Built with the assumed 16 heads, the graph and its --check (against the same wrong net) would both pass."""
    _, d = four_heads
    rc = export.main(['--weights', str(d / 'net_g.pth'), '--output', str(tmp_path / 'a.onnx'), '--check'])
    err = capsys.readouterr().err
    assert rc == 2 and err.count('\n') == 1 and 'num_heads[4]' in err and '--config' in err, err
    assert not (tmp_path / 'a.onnx').exists()


def test_export_builds_the_recorded_configuration(four_heads, tmp_path, capsys):
    net, d = four_heads
    out = tmp_path / 'rec.onnx'
    assert export.main(['--weights', str(d / 'net_g.safetensors'), '--output', str(out)]) == 0
    onnx_net = OnnxNetwork(str(out))
    assert onnx_net.metadata['config']['num_heads'] == [1, 2, 4, 8, 4]
    assert onnx_net.metadata['config_source'] == 'recorded'
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = net(x)
        wrong = S2Former(preset='small').eval()  # the default 16 bottleneck heads, the same weights
        wrong.load_state_dict(net.state_dict())
        assumed = wrong(x)
    got = onnx_net(x)
    assert (got - expected).abs().mean() <= 1e-5
    # random weights move little, but the 16-head net is far from the export next to the runtimes' rounding
    assert (got - assumed).abs().mean() > 10 * (got - expected).abs().mean()
    # the .pth with the training options gives the same graph's outputs, bit for bit
    out2 = tmp_path / 'cfg.onnx'
    argv = ['--weights', str(d / 'net_g.pth'), '--output', str(out2), '--config', str(d / 'opt.yml')]
    assert export.main(argv) == 0
    assert torch.equal(OnnxNetwork(str(out2))(x), got)


def test_export_refuses_config_differing_from_the_record(four_heads, tmp_path, capsys):
    _, d = four_heads
    argv = ['--weights', str(d / 'net_g.safetensors'), '--output', str(tmp_path / 'a.onnx')]
    assert export.main([*argv, '--config', str(d / 'default.yml')]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'records another network configuration' in err and 'num_heads' in err, err
    assert not (tmp_path / 'a.onnx').exists()


# ---------------------------------------------------------------------------------- tracing-time size computations
@pytest.mark.parametrize('size', [(1, 1), (5, 200), (37, 53), (64, 64), (65, 127), (40, 130)])
def test_traced_pad_equals_eager_pad(net, size):
    x = torch.rand(2, 3, *size)
    np.testing.assert_array_equal(_traced_pad_to_multiple(x, net.pad_multiple).numpy(), net.pad(x).numpy())


@pytest.mark.parametrize('size', [(8, 8), (16, 64), (72, 40), (64, 64)])
def test_traced_sampling_axes_equal_cached_ones(size):
    h, w = size
    cached = blocks._sampling_axes(h, w, 8, torch.device('cpu'), torch.float32)
    traced = blocks._traced_sampling_axes(torch.tensor(h), torch.tensor(w), 8, torch.device('cpu'), torch.float32)
    for a, b in zip(cached, traced):
        a, b = torch.broadcast_tensors(a, b)
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)


@pytest.mark.parametrize('n', [1, 2, 5, 64, 99, 4096])
def test_traced_topk_mask_equals_eager(n):
    scores = torch.randn(3, n, generator=torch.Generator().manual_seed(n))
    assert torch.equal(ops._traced_topk_mask(scores, udr.RANK_KEEP_RATIO), udr.topk_mask(scores))


# ---------------------------------------------------------------------------------- the rival derainers
@pytest.mark.parametrize('name', ['Restormer', 'NAFNet'])
def test_rival_exports_one_file_for_every_size(name, tmp_path):
    """Restormer and NAFNet export like S2Former: one graph, any size, equal to PyTorch (shared padding)."""
    net = _rival(name)
    export_onnx(net, str(tmp_path / 'rival.onnx'), sample_size=(64, 96))
    runtime = OnnxNetwork(str(tmp_path / 'rival.onnx'))  # runs a 23 x 17 image on loading
    for h, w in ((64, 96), (37, 53), (71, 130)):
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h * w))
        with torch.no_grad():
            expected = net(x)
        out = runtime(x)
        assert tuple(out.shape) == (1, 3, h, w)
        assert (out - expected).abs().max() < 1e-5


def test_mprnet_export_is_fixed_size_and_refused_on_loading(tmp_path):
    """MPRNet's own forward splits the image into patches with Python ints (``int(H / 2)``), which a tracer bakes
    in: its graph only runs at the traced size, and loading it says so instead of failing later."""
    export_onnx(_rival('MPRNet'), str(tmp_path / 'mprnet.onnx'), sample_size=(64, 96))
    with pytest.raises(OnnxError, match='onnxruntime failed on a 23 x 17 input'):
        OnnxNetwork(str(tmp_path / 'mprnet.onnx'))


def _rival(name: str) -> torch.nn.Module:
    from s2former_plugin.archs import spandrel_rival

    ref = torch.load(DATA / 'rivals' / f'{name.lower()}_small_seed7.pt', weights_only=True)
    net = spandrel_rival.RIVALS[name](**ref['kwargs'])
    net.load_state_dict(ref['state_dict'], strict=True)
    return net.eval()
