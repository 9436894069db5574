"""``infer --bf16``: bfloat16 autocast on the CPU, close to float32; refused together with ``--fp16``."""

import cv2
import numpy as np
import torch

from s2former_plugin import infer
from s2former_plugin.archs.s2former_arch import S2Former


def test_bf16_inference_is_close_to_float32_and_says_so(tmp_path, capsys, monkeypatch):
    torch.manual_seed(0)
    torch.save(S2Former(preset='small').eval().state_dict(), tmp_path / 'w.pth')
    (tmp_path / 'in').mkdir()
    img = np.random.default_rng(0).integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / 'in' / 'a.png'), img)
    autocast = []
    forward = S2Former.forward

    def recording_forward(self, *args, **kwargs):
        autocast.append(torch.is_autocast_enabled('cpu'))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(S2Former, 'forward', recording_forward)
    outs = {}
    for name, extra in (('fp32', []), ('bf16', ['--bf16'])):
        argv = ['--weights', str(tmp_path / 'w.pth'), '--input', str(tmp_path / 'in'), '--output', str(tmp_path / name)]
        assert infer.main([*argv, '--tile', '0', '--device', 'cpu', '--no-progress', *extra]) == 0
        assert ('cpu, bf16, tile' in capsys.readouterr().out) == (name == 'bf16')
        outs[name] = cv2.imread(str(tmp_path / name / 'a.png')).astype(np.float64)
    assert autocast == [False, True]
    # bfloat16 rounds to 8 mantissa bits: a few grey levels on average, not a different image.
    diff = np.abs(outs['bf16'] - outs['fp32'])
    assert 0 < diff.mean() < 4.0


def test_fp16_and_bf16_together_are_refused(tmp_path, capsys):
    argv = ['--weights', str(tmp_path / 'w.pth'), '--input', str(tmp_path), '--output', str(tmp_path / 'o')]
    assert infer.main([*argv, '--fp16', '--bf16']) == 2
    err = capsys.readouterr().err.strip()
    assert err == 'infer: error: --fp16 and --bf16: choose one'
    assert not (tmp_path / 'o').exists()
