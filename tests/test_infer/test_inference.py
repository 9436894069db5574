"""``s2former_plugin.inference`` and the image checks of ``infer`` on their own: what ``derain_array`` feeds the
network and writes back for every depth and colour mode, which images are refused, which weights and configuration
are loaded, the device chosen and the out-of-memory retries (with stand-in networks: fast, exact values).
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from s2former_plugin import inference
from s2former_plugin.archs.s2former_arch import S2Former
from s2former_plugin.infer_run import image_problem
from s2former_plugin.inference import InferError, derain_array, load_network, pick_device, retry_out_of_memory

SCALES = {np.uint8: 255, np.uint16: 65535, np.float32: 1, np.float64: 1}


def _image(dtype: type, channels: int | None, shape: tuple[int, int] = (5, 7), seed: int = 0) -> np.ndarray:
    """An image as OpenCV reads it: ``H x W`` (channels None) or ``H x W x C``, full range of ``dtype``."""
    rng = np.random.default_rng(seed)
    full = (*shape, channels) if channels else shape
    values = rng.random(full)
    if dtype in (np.float32, np.float64):
        return values.astype(dtype)
    return np.rint(values * SCALES[dtype]).astype(dtype)


def _spread(x: torch.Tensor) -> torch.Tensor:
    """A stand-in network: a different affine map per RGB channel, reaching well below 0 and above 1."""
    gain = torch.tensor([1.8, 1.0, 0.6]).view(1, 3, 1, 1)
    offset = torch.tensor([-0.5, 0.3, -0.2]).view(1, 3, 1, 1)
    return x * gain + offset


def _quantise(rgb: np.ndarray, dtype: type) -> np.ndarray:
    """Clip to [0, 1] and round to ``dtype``'s levels, in float32 like the network's output (float64 would round
    a few values an exact half level away the other way)."""
    clipped = np.clip(rgb.astype(np.float32), 0, 1)
    return clipped.astype(dtype) if SCALES[dtype] == 1 else np.rint(clipped * np.float32(SCALES[dtype])).astype(dtype)


# ---------------------------------------------------------------------------------------------- derain_array
@pytest.mark.parametrize('dtype', [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize('channels', [None, 1, 3, 4])
def test_derain_array_feeds_rgb_floats_and_writes_back_the_input_layout(dtype, channels):
    img = _image(dtype, channels)
    seen = []

    def run(x: torch.Tensor):
        seen.append(x.clone())
        return _spread(x), x[:, [1, 2, 0]] * 0.5

    out, unc = derain_array(img, run)
    # In: one 1 x 3 x H x W float32 RGB tensor in [0, 1] (grey repeated into three channels).
    (x,) = seen
    assert x.dtype == torch.float32 and x.shape == (1, 3, 5, 7)
    bgr = np.repeat(img.reshape(5, 7, 1), 3, axis=2) if channels in (None, 1) else img[..., :3]
    rgb = bgr[..., ::-1].astype(np.float64) / SCALES[dtype]
    np.testing.assert_allclose(x[0].permute(1, 2, 0).double().numpy(), rgb, rtol=0, atol=1e-7)
    # Out: the input's shape and dtype, BGR order, clipped and rounded; alpha copied untouched.
    assert out.shape == img.shape and out.dtype == img.dtype and out.flags['C_CONTIGUOUS']
    colour = _quantise(_spread(x)[0].permute(1, 2, 0).numpy()[..., ::-1], dtype)
    if channels in (None, 1):
        expected = cv2.cvtColor(colour.astype(np.float32) if dtype == np.float64 else colour, cv2.COLOR_BGR2GRAY)
        np.testing.assert_array_equal(out, expected.astype(dtype).reshape(img.shape))
    else:
        np.testing.assert_array_equal(out[..., :3], colour)
    if channels == 4:
        np.testing.assert_array_equal(out[..., 3], img[..., 3])
    # The uncertainty: H x W x 3 float32 in the network's channel order, not clipped or scaled.
    assert unc.dtype == np.float32 and unc.shape == (5, 7, 3)
    np.testing.assert_array_equal(unc, (x[:, [1, 2, 0]] * 0.5)[0].permute(1, 2, 0).numpy())


def test_derain_array_without_uncertainty_and_rounding_to_nearest_level():
    img = np.zeros((2, 3, 3), np.uint8)
    # 0.5 / 255 and 254.49 / 255: round half to even, to nearest; -0.2 and 1.3 clipped.
    levels = torch.tensor([0.5, 254.49, 100.5, 7.51, -0.2 * 255, 1.3 * 255]) / 255

    def run(x):
        return levels.view(1, 1, 2, 3).expand(1, 3, 2, 3).clone(), None

    out, unc = derain_array(img, run)
    assert unc is None
    np.testing.assert_array_equal(out[..., 0], [[0, 254, 100], [8, 0, 255]])
    out16, _ = derain_array(img.astype(np.uint16), lambda x: (torch.full_like(x, 0.5), None))
    np.testing.assert_array_equal(out16, np.full((2, 3, 3), 32768, np.uint16))  # 32767.5 to even


@pytest.mark.parametrize('dtype', [np.uint8, np.uint16, np.float32, np.float64])
def test_grey_output_is_the_grey_conversion_of_the_colour_output(dtype):
    """A grey image comes back as the grey conversion of what the same picture in colour comes back as: each
    channel clipped first. Converting the unclipped channels lets over- and under-shoots cancel (tens of levels)."""
    grey = _image(dtype, None, (9, 11), seed=1)
    out_grey, _ = derain_array(grey, lambda x: (_spread(x), None))
    out_colour, _ = derain_array(np.repeat(grey[..., None], 3, axis=2), lambda x: (_spread(x), None))
    if dtype == np.float64:  # OpenCV converts float32 at most; the colour output's channels are float32 values
        expected = cv2.cvtColor(out_colour.astype(np.float32), cv2.COLOR_BGR2GRAY).astype(np.float64)
    else:
        expected = cv2.cvtColor(out_colour, cv2.COLOR_BGR2GRAY)
    np.testing.assert_array_equal(out_grey, expected)
    # The documented luma weights (BT.601) on the clipped colour output, to within one level of rounding.
    b, g, r = (out_colour[..., i].astype(np.float64) for i in range(3))
    tolerance = {np.uint8: 1, np.uint16: 2, np.float32: 1e-6, np.float64: 1e-6}[dtype]  # OpenCV's fixed point
    assert np.abs(out_grey - (0.114 * b + 0.587 * g + 0.299 * r)).max() <= tolerance


def test_derain_array_counts_non_finite_values():
    def run(x):
        out = x.clone()
        out[0, 0, 0, :2] = float('nan')
        out[0, 2, 1, 1] = float('-inf')
        return out, None

    with pytest.raises(inference.NonFiniteOutput, match='holds 3 NaN/inf values'):
        derain_array(np.zeros((3, 4, 3), np.uint8), run)


def test_derain_array_refuses_other_pixel_types():
    with pytest.raises(ValueError, match='unsupported pixel type int16'):
        derain_array(np.zeros((3, 4, 3), np.int16), lambda x: (x, None))


# ---------------------------------------------------------------------------------------------- image_problem
@pytest.mark.parametrize(
    ('img', 'problem'),
    [
        (None, 'cannot read image'),
        (np.zeros((0, 4, 3), np.uint8), 'cannot read image'),
        (np.zeros((4, 5, 3), np.int8), 'unsupported pixel type int8'),
        (np.zeros((4, 5, 3), np.int32), 'unsupported pixel type int32'),
        (np.zeros((4, 5, 3), np.float16), 'unsupported pixel type float16'),
        (np.zeros((4, 5, 3), bool), 'unsupported pixel type bool'),
        (np.zeros((4, 5, 2), np.uint8), 'unsupported channel count 2'),
        (np.zeros((4, 5, 5), np.uint8), 'unsupported channel count 5'),
    ],
)
def test_image_problem_refuses_unusable_images(img, problem):
    assert image_problem(img, 32, 8, 'cosine') == problem


@pytest.mark.parametrize('dtype', [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize('shape', [(1, 1), (4, 5), (4, 5, 1), (4, 5, 3), (4, 5, 4)])
def test_image_problem_accepts_every_supported_image(dtype, shape):
    assert image_problem(np.zeros(shape, dtype), 32, 8, 'cosine') is None
    assert image_problem(np.zeros(shape, dtype), 0, 8, 'official') is None


@pytest.mark.parametrize(
    ('hw', 'tile', 'overlap', 'refused'),
    [
        ((8, 40), 32, 8, True),  # shorter side equal to the overlap: no stride left
        ((40, 8), 32, 8, True),
        ((9, 40), 32, 8, False),  # one more pixel: fits
        ((40, 9), 32, 8, False),
        ((8, 8), 32, 8, False),  # a square no larger than the tile is one tile
        ((8, 8), 8, 8, False),
        ((8, 9), 32, 8, True),  # not square: tiled with 8 x 8 squares
        ((5, 5), 4, 8, True),  # a square larger than the tile is tiled
        ((8, 40), 0, 8, False),  # whole images: no tiles
    ],
)
def test_image_problem_official_blend_boundary(hw, tile, overlap, refused):
    img = np.zeros(hw, np.uint8)
    problem = image_problem(img, tile, overlap, 'official')
    if refused:
        assert problem == f'{hw[1]}x{hw[0]} is too small for --blend official with --tile-overlap {overlap}'
    else:
        assert problem is None
    assert image_problem(img, tile, overlap, 'cosine') is None  # cosine tiles cope with any size


# ---------------------------------------------------------------------------------------------- load_network
@pytest.fixture(scope='module')
def small_net() -> S2Former:
    torch.manual_seed(3)
    return S2Former(preset='small')


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_load_network_returns_the_checkpoint_in_eval_mode(small_net, tmp_path):
    other = {k: v + 1 if v.is_floating_point() else v for k, v in small_net.state_dict().items()}
    torch.save({'params': other, 'params_ema': small_net.state_dict()}, tmp_path / 'both.pth')
    torch.save({'params': other}, tmp_path / 'params.pth')
    net, used = load_network(str(tmp_path / 'both.pth'))
    assert used == 'params_ema' and not net.training and all(not m.training for m in net.modules())
    assert _same_weights(net, small_net)
    net, used = load_network(str(tmp_path / 'params.pth'))
    assert used == 'params' and not net.training
    assert all(torch.equal(net.state_dict()[k], v) for k, v in other.items())


def test_load_network_config_as_dict_file_or_options(small_net, tmp_path):
    torch.save(small_net.state_dict(), tmp_path / 'w.pth')
    w = str(tmp_path / 'w.pth')
    given = {'preset': 'small'}
    net, _ = load_network(w, given)
    assert _same_weights(net, small_net) and given == {'preset': 'small'}  # the caller's dict is not changed
    (tmp_path / 'c.json').write_text(json.dumps({'type': 'S2Former', 'preset': 'small'}))
    (tmp_path / 'c.YAML').write_text('preset: small\n')  # no type: S2Former; the extension's case is free
    (tmp_path / 'opt.yml').write_text('name: x\nnetwork_g:\n  type: S2Former\n  preset: small\n')
    for name in ('c.json', 'c.YAML', 'opt.yml'):
        net, _ = load_network(w, str(tmp_path / name))
        assert _same_weights(net, small_net), name


@pytest.mark.parametrize(
    ('name', 'text', 'message'),
    [
        ('c.yml', 'preset: [small\n', 'cannot parse'),
        ('c.json', "{'preset': 'small'}", 'cannot parse'),
        ('c.JSON', 'preset: small\n', 'cannot parse'),  # a .json file is read as JSON only
        ('c.yml', '- preset\n- small\n', 'does not hold a mapping'),
        ('c.yml', 'type: Restormer\npreset: small\n', "network type 'Restormer' is not S2Former"),
        ('c.yml', 'network_g:\n  type: Uformer\n', "network type 'Uformer' is not S2Former"),
        ('c.yml', 'preset: small\nwindow: 8\n', 'does not fit the network configuration'),
    ],
)
def test_load_network_refuses_bad_configs(small_net, tmp_path, name, text, message):
    torch.save(small_net.state_dict(), tmp_path / 'w.pth')
    (tmp_path / name).write_text(text)
    with pytest.raises(InferError, match=message) as info:
        load_network(str(tmp_path / 'w.pth'), str(tmp_path / name))
    assert '\n' not in str(info.value)
    assert str(info.value).startswith('--config: ' if 'fit' not in message else '--weights: ')


def test_load_network_refuses_missing_config_weights_and_non_s2former_state(small_net, tmp_path):
    torch.save(small_net.state_dict(), tmp_path / 'w.pth')
    with pytest.raises(InferError, match=r'^--config: file not found: .*nope\.yml$'):
        load_network(str(tmp_path / 'w.pth'), str(tmp_path / 'nope.yml'))
    with pytest.raises(InferError, match=r'^--weights: file not found: .*nope\.pth$'):
        load_network(str(tmp_path / 'nope.pth'))
    torch.save([1, 2], tmp_path / 'list.pth')
    with pytest.raises(InferError, match=r'^--weights: .*expected a state dict'):
        load_network(str(tmp_path / 'list.pth'))
    torch.save({'conv.weight': torch.zeros(3, 3, 1, 1)}, tmp_path / 'other.pth')
    cannot_infer = r'^--weights: cannot infer the S2Former configuration from .*other\.pth \(KeyError.*pass --config$'
    with pytest.raises(InferError, match=cannot_infer):
        load_network(str(tmp_path / 'other.pth'))
    sd = small_net.state_dict()
    del sd['final_uncertainty_head.conv2.bias']  # the configuration still infers; the strict load refuses
    torch.save(sd, tmp_path / 'bad_shape.pth')
    with pytest.raises(InferError, match='does not fit the network configuration'):
        load_network(str(tmp_path / 'bad_shape.pth'))


# ---------------------------------------------------------------------------------------------- pick_device
@pytest.mark.parametrize('cuda', [False, True])
def test_pick_device(monkeypatch, cuda):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    assert pick_device('auto') == torch.device('cuda' if cuda else 'cpu')
    assert pick_device('cpu') == torch.device('cpu')
    if cuda:
        assert pick_device('cuda') == torch.device('cuda')
    else:
        with pytest.raises(ValueError, match=r'^--device: cuda requested but CUDA is not available$'):
            pick_device('cuda')
    with pytest.raises(ValueError, match=r"^device: expected auto, cpu or cuda, got 'gpu'$"):
        pick_device('gpu', 'device')
    with pytest.raises(ValueError, match=r"^--device: expected auto, cpu or cuda, got 'CPU'$"):
        pick_device('CPU')


# ---------------------------------------------------------------------------------------------- out-of-memory retry
def _fits_below(limit: int, tried: list[int]):
    def run_tiled(tile: int) -> str:
        tried.append(tile)
        assert len(tried) < 10, f'no end to the retries: {tried}'  # a retry loop that never ends fails, not hangs
        if tile == 0 or tile > limit:
            raise torch.OutOfMemoryError('CUDA out of memory (stand-in)')
        return f'ran with {tile}'

    return run_tiled


@pytest.mark.parametrize(
    ('tile', 'overlap', 'size', 'limit', 'tried', 'result'),
    [
        (320, 64, (900, 700), 400, [320], 'ran with 320'),  # fits at once: no retry
        (320, 64, (900, 700), 100, [320, 160, 80], 'ran with 80'),
        (0, 32, (300, 500), 200, [0, 250, 125], 'ran with 125'),  # whole image: half its longer side
        (0, 32, (500, 300), 250, [0, 250], 'ran with 250'),
        (256, 16, (900, 700), 64, [256, 128, 64], 'ran with 64'),  # down to the smallest tile, inclusive
    ],
)
def test_retry_out_of_memory_halves_the_tile(capsys, tile, overlap, size, limit, tried, result):
    calls: list[int] = []
    assert retry_out_of_memory(_fits_below(limit, calls), tile, overlap, size) == result
    assert calls == tried
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == len(tried) - 1
    for line, (before, after) in zip(lines, zip(tried, tried[1:])):
        assert line == (
            f'infer: out of GPU memory with tile {before or "off"} on a {size[1]}x{size[0]} image: cache freed, '
            f'retrying with tile {after}'
        )


@pytest.mark.parametrize(
    ('tile', 'overlap', 'size', 'tried', 'message'),
    [
        (256, 16, (900, 700), [256, 128, 64], 'tile 64'),  # 32 would be below the smallest tile
        (127, 16, (900, 700), [127], 'tile 127'),  # 63 is below 64
        (320, 80, (900, 700), [320, 160], 'tile 160'),  # 80 would not exceed the overlap
        (320, 79, (900, 700), [320, 160, 80], 'tile 80'),
        (0, 16, (100, 90), [0], 'tile off'),  # half of 100 is below 64
    ],
)
def test_retry_out_of_memory_gives_up(capsys, tile, overlap, size, tried, message):
    calls: list[int] = []
    with pytest.raises(inference.OutOfMemorySkip, match=f'^out of GPU memory even with {message}$'):
        retry_out_of_memory(_fits_below(1, calls), tile, overlap, size)
    assert calls == tried
    assert len(capsys.readouterr().err.splitlines()) == len(tried) - 1


def test_retry_out_of_memory_passes_other_errors_and_frees_the_cuda_cache(monkeypatch):
    freed = []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'empty_cache', lambda: freed.append(True))
    calls: list[int] = []
    assert retry_out_of_memory(_fits_below(100, calls), 400, 16, (500, 500)) == 'ran with 100'
    assert len(freed) == 2  # once per failed try

    def broken(tile):
        raise RuntimeError('not a memory problem')

    with pytest.raises(RuntimeError, match='not a memory problem'):
        retry_out_of_memory(broken, 320, 64, (500, 500))


def test_the_cpu_allocators_out_of_memory_error_is_retried_with_smaller_tiles(capsys):
    from s2former_plugin.inference import retry_out_of_memory

    tried = []

    def run(tile):
        tried.append(tile)
        if tile == 0 or tile > 100:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory")
        return 'done'

    assert retry_out_of_memory(run, 0, 16, (100, 200)) == 'done' and tried == [0, 100]
    assert 'out of CPU memory with tile off on a 200x100 image: retrying with tile 100' in capsys.readouterr().err
    with pytest.raises(RuntimeError, match='another error'):
        retry_out_of_memory(lambda t: (_ for _ in ()).throw(RuntimeError('another error')), 0, 16, (100, 200))


def test_a_whole_image_too_large_for_the_cpu_is_refused_before_the_forward():
    from s2former_plugin.memory import BYTES_PER_PIXEL, whole_image_problem

    gib = 2**30
    assert whole_image_problem(3000, 4000, available=64 * gib) is None
    message = whole_image_problem(3000, 4000, available=8 * gib)
    assert message == (
        f'a whole 4000x3000 image needs about {BYTES_PER_PIXEL * 12e6 / gib:.1f} GiB on the CPU, 8.0 GiB are '
        'available: use --tile 512'
    )
