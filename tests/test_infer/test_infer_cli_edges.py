"""``python -m s2former_plugin.infer``'s choices a user sees in the results: the defaults, the autocast precision
per option and device, which files are written, and the exit status (a tiny network, tiny images)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from s2former_plugin import infer, infer_run, inference
from s2former_plugin.archs.s2former_arch import S2Former
from s2former_plugin.tiling import tiled_forward


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    torch.manual_seed(4)
    path = tmp_path_factory.mktemp('weights') / 'w.pth'
    torch.save(S2Former(preset='small').state_dict(), path)
    return path


@pytest.fixture
def photo_dir(tmp_path):
    folder = tmp_path / 'in'
    folder.mkdir()
    img = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8), (0, 0), 1)
    cv2.imwrite(str(folder / 'a.png'), img)
    return folder


def test_defaults():
    args = infer.build_parser().parse_args(['--weights', 'w', '--input', 'i', '--output', 'o'])
    assert (args.tile, args.tile_overlap, args.tile_batch, args.blend) == (320, 64, 1, 'cosine')
    assert (args.device, args.fp16, args.bf16, args.config) == ('auto', False, False, None)
    assert (args.save_uncertainty, args.no_progress, args.cuda_graph) == (False, False, False)
    full = ['--weights', 'w', '--input', 'i', '--output', 'o']
    for i in (0, 2, 4):  # each of the three is required
        with pytest.raises(SystemExit):
            infer.build_parser().parse_args(full[:i] + full[i + 2 :])
    # Numbers are integers (a string would fail the tiling checks, or tile with text).
    args = infer.build_parser().parse_args([*full, '--tile', '96', '--tile-overlap', '16', '--tile-batch', '4'])
    assert [(type(v), v) for v in (args.tile, args.tile_overlap, args.tile_batch)] == [(int, 96), (int, 16), (int, 4)]
    for device in ('auto', 'cpu', 'cuda'):  # each device can be named (the choice is checked later)
        assert infer.build_parser().parse_args([*full, '--device', device]).device == device
    with pytest.raises(SystemExit):
        infer.build_parser().parse_args([*full, '--device', 'gpu'])


@pytest.mark.parametrize(
    ('extra', 'autocast', 'summary', 'warning'),
    [
        ([], None, 'cpu, tile off,', None),
        (['--bf16'], torch.bfloat16, 'cpu, bf16, tile off,', None),
        (['--fp16'], None, 'cpu, tile off,', 'infer: warning: --fp16 needs CUDA; running in float32'),
        (
            ['--cuda-graph'],
            None,
            'cpu, tile off,',
            'infer: warning: --cuda-graph does not apply, it needs CUDA (device cpu); running eagerly',
        ),
    ],
)
def test_precision_chosen_on_the_cpu(
    weights, photo_dir, tmp_path, capsys, monkeypatch, extra, autocast, summary, warning
):
    seen = []
    forward = S2Former.forward

    def recording_forward(self, *args, **kwargs):
        on = torch.is_autocast_enabled('cpu')
        seen.append(torch.get_autocast_dtype('cpu') if on else None)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(S2Former, 'forward', recording_forward)
    argv = ['--weights', str(weights), '--input', str(photo_dir), '--output', str(tmp_path / 'out'), '--tile', '0']
    assert infer.main([*argv, '--device', 'cpu', '--no-progress', *extra]) == 0
    assert seen == [autocast]
    captured = capsys.readouterr()
    assert f'infer: 1/1 images -> {tmp_path / "out"} (state dict, {summary} ' in captured.out
    assert (warning in captured.err.splitlines()) if warning else 'warning' not in captured.err


def test_uncertainty_written_only_when_asked(weights, photo_dir, tmp_path):
    argv = ['--weights', str(weights), '--input', str(photo_dir), '--tile', '0', '--no-progress']
    assert infer.main([*argv, '--output', str(tmp_path / 'plain')]) == 0
    assert sorted(p.name for p in (tmp_path / 'plain').iterdir()) == ['a.png']
    assert infer.main([*argv, '--output', str(tmp_path / 'unc'), '--save-uncertainty']) == 0
    assert infer.main([*argv, '--output', str(tmp_path / 'unc'), '--save-uncertainty']) == 2  # again: refused
    assert infer.main([*argv, '--output', str(tmp_path / 'unc'), '--save-uncertainty', '--overwrite']) == 0
    assert sorted(p.name for p in (tmp_path / 'unc').iterdir()) == ['a.png', 'uncertainty']
    assert sorted(p.name for p in (tmp_path / 'unc' / 'uncertainty').iterdir()) == ['a.npz', 'a.png']
    # The image itself does not depend on the option.
    np.testing.assert_array_equal(
        cv2.imread(str(tmp_path / 'plain' / 'a.png')), cv2.imread(str(tmp_path / 'unc' / 'a.png'))
    )


def test_output_names_of_inputs_sharing_a_stem(weights, photo_dir, tmp_path):
    img = cv2.imread(str(photo_dir / 'a.png'))
    cv2.imwrite(str(photo_dir / 'a.jpg'), img)
    cv2.imwrite(str(photo_dir / 'b.bmp'), img)
    argv = ['--weights', str(weights), '--input', str(photo_dir), '--output', str(tmp_path / 'out')]
    assert infer.main([*argv, '--tile', '0', '--no-progress']) == 0
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['a.jpg.png', 'a.png.png', 'b.png']


@pytest.mark.parametrize('name', ['l.png', 'f.tiff'])
def test_refuses_an_output_that_is_an_input_through_a_link(weights, tmp_path, capsys, name):
    """The input folder holds a link to a file in the output folder, where the output of that input would go."""
    (tmp_path / 'in').mkdir()
    (tmp_path / 'out').mkdir()
    img = np.random.default_rng(1).random((10, 12, 3), dtype=np.float32)
    cv2.imwrite(str(tmp_path / 'out' / name), img if name.endswith('tiff') else np.uint8(img * 255))
    (tmp_path / 'in' / name).symlink_to(tmp_path / 'out' / name)
    before = (tmp_path / 'out' / name).read_bytes()
    argv = ['--weights', str(weights), '--input', str(tmp_path / 'in'), '--output', str(tmp_path / 'out')]
    assert infer.main([*argv, '--tile', '0', '--no-progress']) == 2
    err = capsys.readouterr().err.strip()
    assert err == f'infer: error: --output: writing {tmp_path / "out" / name} would overwrite an input'
    assert (tmp_path / 'out' / name).read_bytes() == before


def test_refuses_uncertainty_maps_over_the_inputs(weights, tmp_path, capsys):
    out = tmp_path / 'out'
    (out / 'uncertainty').mkdir(parents=True)
    cv2.imwrite(str(out / 'uncertainty' / 'a.png'), np.full((10, 12, 3), 90, np.uint8))
    before = (out / 'uncertainty' / 'a.png').read_bytes()
    argv = ['--weights', str(weights), '--input', str(out / 'uncertainty'), '--output', str(out), '--tile', '0']
    assert infer.main([*argv, '--no-progress', '--save-uncertainty']) == 2
    assert 'would overwrite an input' in capsys.readouterr().err
    assert (out / 'uncertainty' / 'a.png').read_bytes() == before
    assert infer.main([*argv, '--no-progress']) == 0  # without the maps nothing lands on the inputs
    assert (out / 'uncertainty' / 'a.png').read_bytes() == before and (out / 'a.png').is_file()


def test_config_option_is_used(tmp_path, photo_dir):
    """The bottleneck head count leaves no trace in the weights: only ``--config`` can give it, so a net with 4
    heads run without it computes something else, and with it exactly the configured net."""
    torch.manual_seed(5)
    net = S2Former(preset='small', num_heads=(1, 2, 4, 8, 4)).eval()
    torch.save(net.state_dict(), tmp_path / 'w.pth')
    (tmp_path / 'net.yml').write_text('preset: small\nnum_heads: [1, 2, 4, 8, 4]\n')
    argv = ['--weights', str(tmp_path / 'w.pth'), '--input', str(photo_dir), '--tile', '0', '--no-progress']
    assert infer.main([*argv, '--output', str(tmp_path / 'with'), '--config', str(tmp_path / 'net.yml')]) == 0
    assert infer.main([*argv, '--output', str(tmp_path / 'without')]) == 0
    img = cv2.imread(str(photo_dir / 'a.png'))
    x = torch.from_numpy(img[..., ::-1].astype(np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = np.rint(net(x)[0].clamp(0, 1).permute(1, 2, 0).numpy()[..., ::-1] * 255)
    with_config = cv2.imread(str(tmp_path / 'with' / 'a.png')).astype(np.float64)
    assert np.abs(with_config - expected).max() <= 1
    assert np.abs(cv2.imread(str(tmp_path / 'without' / 'a.png')) - expected).max() > 1


def test_tiling_options_reach_the_tiles(weights, photo_dir, tmp_path):
    """``--tile``, ``--tile-overlap`` and ``--blend`` give exactly the tiled forward they name (a whole-image run or
    the other blend differ by more than a rounding level)."""
    net = S2Former(preset='small').eval()
    net.load_state_dict(torch.load(weights, weights_only=True))
    img = cv2.imread(str(photo_dir / 'a.png'))
    x = torch.from_numpy(img[..., ::-1].astype(np.float32) / 255).permute(2, 0, 1)[None]

    def expected(tile, blend):
        with torch.no_grad():
            out = tiled_forward(net, x, tile, 4, blend=blend)
        return np.rint(out[0].clamp(0, 1).permute(1, 2, 0).numpy()[..., ::-1] * 255)

    refs = {(t, b): expected(t, b) for t, b in ((16, 'cosine'), (16, 'official'), (None, 'cosine'))}
    assert np.abs(refs[16, 'cosine'] - refs[16, 'official']).max() > 1
    assert np.abs(refs[16, 'cosine'] - refs[None, 'cosine']).max() > 1
    argv = ['--weights', str(weights), '--input', str(photo_dir), '--tile-overlap', '4', '--no-progress']
    for tile, blend in refs:
        out = tmp_path / f'{tile}_{blend}'
        assert infer.main([*argv, '--tile', str(tile or 0), '--blend', blend, '--output', str(out)]) == 0
        assert np.abs(cv2.imread(str(out / 'a.png')) - refs[tile, blend]).max() <= 1, (tile, blend)


def test_a_skipped_image_does_not_stop_the_others(weights, photo_dir, tmp_path, capsys):
    """An image too thin for ``--blend official`` is skipped by name; the images after it are still written."""
    img = cv2.imread(str(photo_dir / 'a.png'))
    cv2.imwrite(str(photo_dir / '0thin.png'), img[:4])
    cv2.imwrite(str(photo_dir / 'b.png'), img)
    argv = ['--weights', str(weights), '--input', str(photo_dir), '--output', str(tmp_path / 'out'), '--no-progress']
    assert infer.main([*argv, '--tile', '16', '--tile-overlap', '4', '--blend', 'official']) == 1
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['a.png', 'b.png']
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f'infer: 1 file(s) skipped: {photo_dir / "0thin.png"}'
    assert infer.main([*argv[:-3], '--output', str(tmp_path / 'cosine'), '--tile', '16', '--tile-overlap', '4']) == 0


@pytest.mark.parametrize(
    ('error', 'message'),
    [
        (inference.NonFiniteOutput('network output holds 3 NaN/inf values'), '; no output written'),
        (inference.OutOfMemorySkip('out of GPU memory even with tile 64'), ', skipped: '),
    ],
)
def test_an_image_failing_in_the_network_does_not_stop_the_others(
    weights, photo_dir, tmp_path, capsys, monkeypatch, error, message
):
    img = cv2.imread(str(photo_dir / 'a.png'))
    cv2.imwrite(str(photo_dir / 'b.png'), img)
    real = infer_run.derain_array

    def first_fails(arr, run):
        if not hasattr(first_fails, 'done'):
            first_fails.done = True
            raise error
        return real(arr, run)

    monkeypatch.setattr(infer_run, 'derain_array', first_fails)
    argv = ['--weights', str(weights), '--input', str(photo_dir), '--output', str(tmp_path / 'out'), '--no-progress']
    assert infer.main([*argv, '--tile', '0']) == 1
    assert [p.name for p in (tmp_path / 'out').iterdir()] == ['b.png']
    err = capsys.readouterr().err.strip().splitlines()
    assert any(str(photo_dir / 'a.png') in line and message in line for line in err)
    assert err[-1] == f'infer: 1 file(s) skipped: {photo_dir / "a.png"}'


def test_two_runs_into_one_folder_do_not_pass_each_other_off(weights, photo_dir, tmp_path, capsys):
    """The second run would replace the first's images: refused (named), or done with --overwrite; a run still
    writing into the folder (its lock held by a live process) refuses the second one outright."""
    import os
    import subprocess
    import sys

    argv = ['--weights', str(weights), '--input', str(photo_dir), '--tile', '0', '--no-progress']
    out = tmp_path / 'out'
    assert infer.main([*argv, '--output', str(out)]) == 0
    capsys.readouterr()
    assert infer.main([*argv, '--output', str(out)]) == 2
    err = capsys.readouterr().err
    assert "already holds 1 of this run's output name(s) (e.g. a.png)" in err and '--overwrite' in err
    other = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        (out / '.s2former-infer.lock').write_text(f'{other.pid}\n')
        assert infer.main([*argv, '--output', str(out), '--overwrite']) == 2
        assert f'being written by another infer run (process {other.pid})' in capsys.readouterr().err
    finally:
        other.kill()
        other.wait()
    assert infer.main([*argv, '--output', str(out), '--overwrite']) == 0  # a dead run's lock is taken over
    assert sorted(os.listdir(out)) == ['a.png']


def test_a_broken_link_among_the_inputs_is_named_not_dropped(weights, photo_dir, tmp_path, capsys):
    import os

    os.symlink(tmp_path / 'gone.png', photo_dir / 'b.png')
    argv = ['--weights', str(weights), '--input', str(photo_dir), '--tile', '0', '--no-progress']
    assert infer.main([*argv, '--output', str(tmp_path / 'out')]) == 1
    err = capsys.readouterr().err
    assert f'{photo_dir / "b.png"}: broken link (to {tmp_path / "gone.png"}); skipped' in err
    assert 'infer: 1 file(s) skipped' in err


def test_tile_0_names_an_image_too_large_for_the_cpu_and_the_tile_to_use(weights, photo_dir, tmp_path, capsys):
    import s2former_plugin.memory as memory

    argv = ['--weights', str(weights), '--input', str(photo_dir), '--tile', '0', '--no-progress', '--device', 'cpu']
    old = memory.available_bytes
    memory.available_bytes = lambda: 1024 * 1024  # 1 MiB free: no whole image fits
    try:
        assert infer.main([*argv, '--output', str(tmp_path / 'out')]) == 1
    finally:
        memory.available_bytes = old
    err = capsys.readouterr().err
    assert 'GiB on the CPU, 0.0 GiB are available: use --tile 256, skipped: ' in err and 'a.png' in err
