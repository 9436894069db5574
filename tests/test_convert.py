"""convert: .pth <-> .safetensors bit for bit, the configuration recorded when known, one-line refusals; infer reads
the converted file to the same image bytes."""

import cv2
import numpy as np
import pytest
import torch

from s2former_plugin import convert, infer
from s2former_plugin.archs.s2former_arch import S2Former
from s2former_plugin.archs.s2former_keys import ours_state_dict_to_official
from s2former_plugin.checkpoint import read_checkpoint


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    torch.manual_seed(4)
    net = S2Former(preset='small', num_heads=(1, 2, 4, 8, 4)).eval()
    d = tmp_path_factory.mktemp('convert')
    torch.save({'params': net.state_dict(), 'params_ema': net.state_dict()}, d / 'net_g.pth')
    (d / 'opt.yml').write_text('network_g:\n  type: S2Former\n  preset: small\n  num_heads: [1, 2, 4, 8, 4]\n')
    return net, d


def _bitwise_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def test_round_trip_is_bit_exact_and_records_the_config(files, capsys):
    net, d = files
    st, back = d / 'rt.safetensors', d / 'rt.pth'
    assert convert.main([str(d / 'net_g.pth'), str(st), '--config', str(d / 'opt.yml')]) == 0
    assert 'configuration recorded (--config)' in capsys.readouterr().out
    ckpt = read_checkpoint(st)
    assert _bitwise_equal(ckpt.state, net.state_dict())
    assert ckpt.metadata['arch'] == 'S2Former' and ckpt.metadata['source'] == 'net_g.pth'
    assert '"num_heads": [1, 2, 4, 8, 4]' in ckpt.metadata['config']
    assert convert.main([str(st), str(back)]) == 0  # the record travels on without --config
    assert 'configuration recorded (recorded)' in capsys.readouterr().out
    again = read_checkpoint(back)
    assert _bitwise_equal(again.state, net.state_dict()) and again.metadata['config'] == ckpt.metadata['config']


def test_half_weights_keep_their_dtype(files):
    net, d = files
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}, d / 'h.pth')
    assert convert.main([str(d / 'h.pth'), str(d / 'h.safetensors'), '--config', str(d / 'opt.yml')]) == 0
    assert _bitwise_equal(read_checkpoint(d / 'h.safetensors').state, read_checkpoint(d / 'h.pth').state)


def test_official_keys_are_written_as_ours(files):
    net, d = files
    torch.save(ours_state_dict_to_official(net.state_dict()), d / 'udrs2former_x.pth')
    assert convert.main([str(d / 'udrs2former_x.pth'), str(d / 'o.safetensors'), '--config', str(d / 'opt.yml')]) == 0
    assert _bitwise_equal(read_checkpoint(d / 'o.safetensors').state, net.state_dict())


def test_without_config_the_head_count_is_not_recorded(files, capsys):
    _, d = files
    assert convert.main([str(d / 'net_g.pth'), str(d / 'n.safetensors')]) == 0
    captured = capsys.readouterr()
    assert 'configuration not recorded' in captured.out and 'bottleneck head count' in captured.err
    assert 'config' not in read_checkpoint(d / 'n.safetensors').metadata


def test_refusals_are_one_line(files, tmp_path, capsys):
    net, d = files
    (tmp_path / 'exists.safetensors').write_bytes(b'keep')
    (tmp_path / 'other.pth').write_bytes(b'')
    torch.save({'conv.weight': torch.zeros(1, 1, 1, 1)}, tmp_path / 'rival.pth')
    default = tmp_path / 'default.yml'
    default.write_text('preset: small\n')
    assert convert.main([str(d / 'net_g.pth'), str(d / 'rec.safetensors'), '--config', str(d / 'opt.yml')]) == 0
    capsys.readouterr()
    cases = [
        ([str(d / 'net_g.pth'), str(d / 'net_g.pth')], 'is the input file'),
        ([str(d / 'net_g.pth'), str(tmp_path / 'x.onnx')], 'must end in .safetensors or .pth'),
        ([str(d / 'net_g.pth'), str(tmp_path / 'exists.safetensors')], 'exists; pass --overwrite'),
        ([str(tmp_path / 'none.pth'), str(tmp_path / 'a.safetensors')], 'file not found'),
        ([str(tmp_path / 'other.pth'), str(tmp_path / 'a.safetensors')], 'not a weights-only checkpoint'),
        ([str(tmp_path / 'rival.pth'), str(tmp_path / 'a.safetensors')], 'cannot infer the S2Former configuration'),
        ([str(d / 'rec.safetensors'), str(tmp_path / 'a.pth'), '--config', str(default)], 'records another'),
    ]
    for argv, message in cases:
        assert convert.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and message in err, (argv, err)
    assert (tmp_path / 'exists.safetensors').read_bytes() == b'keep' and not (tmp_path / 'a.safetensors').exists()
    assert convert.main([str(d / 'net_g.pth'), str(tmp_path / 'exists.safetensors'), '--overwrite']) == 0


def test_infer_notes_an_assumed_head_count_only_where_it_is_assumed(files, tmp_path, capsys):
    _, d = files
    st = tmp_path / 'w.safetensors'
    assert convert.main([str(d / 'net_g.pth'), str(st), '--config', str(d / 'opt.yml')]) == 0
    (tmp_path / 'in').mkdir()
    cv2.imwrite(str(tmp_path / 'in' / 'a.png'), np.zeros((16, 16, 3), np.uint8))
    common = ['--input', str(tmp_path / 'in'), '--tile', '0', '--no-progress']
    capsys.readouterr()
    assert infer.main(['--weights', str(st), *common, '--output', str(tmp_path / 'recorded')]) == 0
    assert 'assumed' not in capsys.readouterr().err  # the file records its configuration
    assert infer.main(['--weights', str(d / 'net_g.pth'), *common, '--output', str(tmp_path / 'bare')]) == 0
    assert 'bottleneck head count leaves no trace' in capsys.readouterr().err


def test_infer_gives_the_same_bytes_from_pth_and_safetensors(files, tmp_path):
    net, d = files
    st = tmp_path / 'w.safetensors'
    assert convert.main([str(d / 'net_g.pth'), str(st), '--config', str(d / 'opt.yml')]) == 0
    (tmp_path / 'in').mkdir()
    img = np.random.default_rng(0).integers(0, 256, (21, 30, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / 'in' / 'a.png'), img)
    common = ['--input', str(tmp_path / 'in'), '--tile', '0', '--no-progress']
    assert infer.main(['--weights', str(st), *common, '--output', str(tmp_path / 'st')]) == 0
    argv = ['--weights', str(d / 'net_g.pth'), '--config', str(d / 'opt.yml'), *common, '--output', str(tmp_path / 'p')]
    assert infer.main(argv) == 0
    a, b = (tmp_path / 'st' / 'a.png').read_bytes(), (tmp_path / 'p' / 'a.png').read_bytes()
    assert a == b
    x = torch.from_numpy(img[..., ::-1].astype(np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = np.rint(net(x)[0].clamp(0, 1).permute(1, 2, 0).numpy()[..., ::-1] * 255)
    assert np.abs(cv2.imread(str(tmp_path / 'st' / 'a.png')) - expected).max() <= 1  # the 4-head net, not 16
