"""Details of the network that the parity fixtures cannot see (found by mutation testing): which relative position
bias each query/key pair reads (the fixtures' tables are constant), non-default configurations built as asked, the
configuration errors and their boundaries, the half-precision and traced paths of the decoder attentions.

Networks are built inside the test bodies, not in fixtures, so that mutation testing maps these tests to the
constructors.
"""

from __future__ import annotations

import math

import pytest
import torch

from s2former_plugin.archs import s2former_blocks as blocks
from s2former_plugin.archs import s2former_ranking as udr
from s2former_plugin.archs.s2former_arch import S2Former


def _swin_index(ws: int) -> torch.Tensor:
    """The Swin relative position index written pair by pair: row offset major, column offset minor."""
    n = ws * ws
    index = torch.empty(n, n, dtype=torch.long)
    for i in range(n):
        yi, xi = divmod(i, ws)
        for j in range(n):
            yj, xj = divmod(j, ws)
            index[i, j] = (yi - yj + ws - 1) * (2 * ws - 1) + (xi - xj + ws - 1)
    return index


# ------------------------------------------------------------------------------------- relative position bias
@pytest.mark.parametrize('ws', [1, 2, 3, 4, 8])
def test_relative_position_index_is_the_swin_index(ws):
    index = blocks.relative_position_index(ws)
    assert torch.equal(index, _swin_index(ws))
    assert index.min() == 0 and index.max() == (2 * ws - 1) ** 2 - 1


def test_relative_position_bias_reads_the_table_entry_of_each_pair():
    torch.manual_seed(0)
    attn = blocks.LocalReconstruction(8, 2, 3)
    table = attn.relative_position_bias_table
    with torch.no_grad():
        table.copy_(torch.randn_like(table))  # a distinct value per entry and head
    expected = table[_swin_index(3)].permute(2, 0, 1)  # (heads, N, N)
    assert torch.equal(attn.relative_position_bias(), expected)


def test_local_reconstruction_equals_an_independent_window_attention():
    """float64, non-zero random bias tables and modulation, against the attention evaluated window by window."""
    torch.manual_seed(0)
    dim, heads, ws = 8, 2, 4
    d, n = dim // heads, ws * ws
    attn = blocks.LocalReconstruction(dim, heads, ws).double()
    with torch.no_grad():
        attn.relative_position_bias_table.normal_()
    x = torch.randn(2, 8, 12, dim, dtype=torch.float64)  # (B, H, W, C): 2 x 3 windows per image
    modulation = torch.rand(2 * 2 * 3, 1, n, n, dtype=torch.float64) + 0.5
    with torch.no_grad():
        got = attn(x, modulation)

    index, table = _swin_index(ws), attn.relative_position_bias_table.detach()
    w_qkv, b_qkv = attn.qkv.weight.detach(), attn.qkv.bias.detach()
    expected = torch.empty_like(x)
    win = 0
    for b in range(2):
        for wy in range(2):
            for wx in range(3):
                rows, cols = slice(wy * ws, (wy + 1) * ws), slice(wx * ws, (wx + 1) * ws)
                tokens = x[b, rows, cols].reshape(n, dim)  # raster order inside the window
                qkv = (tokens @ w_qkv.T + b_qkv).view(n, 3, heads, d)
                out = torch.empty(n, dim, dtype=torch.float64)
                for h in range(heads):
                    q, k, v = qkv[:, 0, h], qkv[:, 1, h], qkv[:, 2, h]
                    logits = (q @ k.T) * modulation[win, 0] + table[index, h]
                    out[:, h * d : (h + 1) * d] = torch.softmax(logits, dim=-1) @ v
                expected[b, rows, cols] = attn.proj(out).detach().view(ws, ws, dim)
                win += 1
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_bias_tables_start_as_the_official_truncated_normal():
    """``trunc_normal_(std=0.02)``, as the official code initialises them (a network trained from scratch)."""
    torch.manual_seed(0)
    table = blocks.LocalReconstruction(16, 16, 8).relative_position_bias_table  # 225 x 16 values
    assert 0.018 < table.std().item() < 0.022
    assert table.abs().max().item() < 0.15


# ------------------------------------------------------------------------------------- half precision, tracing
def test_local_reconstruction_under_bf16_autocast_is_close_to_float32():
    """The logits stay float32 under autocast; the result equals the float32 one up to bfloat16 rounding of the
    projections (a softmax over the wrong axis, or the transposed keys, would differ by O(1))."""
    torch.manual_seed(0)
    attn = blocks.LocalReconstruction(16, 2, 4)
    with torch.no_grad():
        attn.relative_position_bias_table.normal_()
    x = torch.randn(2, 8, 8, 16)
    modulation = udr.lr_modulation(torch.randn(2, 16, 8, 8), 4, attn.scale)
    with torch.no_grad():
        expected = attn(x, modulation)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            got = attn(x, modulation)
    assert got.dtype == torch.bfloat16
    assert (got.float() - expected).abs().max() < 0.03 * expected.abs().max()


def test_sparse_sampling_attention_in_bfloat16():
    """A bfloat16 module samples on a bfloat16 grid (``grid_sample`` needs the input's dtype)."""
    torch.manual_seed(0)
    attn = blocks.SparseSamplingAttention(16, 2, 4)
    x = torch.randn(1, 8, 12, 16)
    constraint = udr.ssa_constraint(torch.randn(1, 16, 8, 12))
    with torch.no_grad():
        expected = attn(x, constraint)
        got = attn.to(torch.bfloat16)(x.bfloat16(), constraint.bfloat16())
    assert got.dtype == torch.bfloat16
    assert (got.float() - expected).abs().max() < 0.05 * expected.abs().max()


@pytest.mark.filterwarnings('ignore::torch.jit.TracerWarning', 'ignore:`torch.jit.trace:FutureWarning')
def test_traced_sparse_sampling_attention_follows_the_input_size():
    """A traced module builds its grid from the traced sizes: run at another size it equals eager mode."""
    torch.manual_seed(0)
    attn = blocks.SparseSamplingAttention(8, 2, 4).eval()
    gen = torch.Generator().manual_seed(1)

    def inputs(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        var = torch.randn(1, 8, h, w, generator=gen)
        return torch.randn(1, h, w, 8, generator=gen), udr.ssa_constraint(var)

    with torch.no_grad():
        traced = torch.jit.trace(attn, inputs(8, 8), check_trace=False)
        x, constraint = inputs(12, 20)
        torch.testing.assert_close(traced(x, constraint), attn(x, constraint), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------- configurations
def test_non_default_configuration_is_built_as_asked():
    torch.manual_seed(0)
    cfg = dict(
        in_channels=1,
        out_channels=2,
        dims=[16, 16, 24, 32, 48],
        num_conv_blocks=[2, 1, 0, 1],
        num_bottleneck_blocks=1,
        num_reconstruction_blocks=[1, 3, 2, 1],
        num_heads=[2, 1, 3, 4, 6],
        window_size=[4, 2, 4, 2],
        expand_ratio=[3, 1.5, 2, 2.5],
    )
    net = S2Former('small', **cfg)
    assert net.config == cfg
    assert net.embed.weight.shape == (16, 1, 3, 3)
    for i in range(4):
        dim = cfg['dims'][i]
        assert len(net.encoders[i]) == cfg['num_conv_blocks'][i]
        for block in net.encoders[i]:
            assert block.expand.weight.shape == (round(dim * cfg['expand_ratio'][i]), dim, 1, 1)
        assert len(net.decoders[i]) == cfg['num_reconstruction_blocks'][i]
        for block in net.decoders[i]:
            assert (block.attn.num_heads, block.attn.ws) == (cfg['num_heads'][i], cfg['window_size'][i])
        assert net.image_heads[i].weight.shape == (2, dim, 3, 3)
        assert net.uncertainty_heads[i].conv2.weight.shape == (2, dim, 3, 3)
    assert net.final_image_head.weight.shape[0] == net.final_uncertainty_head.conv2.weight.shape[0] == 2
    assert len(net.bottleneck) == 1 and net.bottleneck[0].attn.num_heads == 6
    assert net.pad_multiple == 16

    x = torch.rand(2, 1, 19, 26)
    with torch.no_grad():
        outputs, uncertainties = net(x, return_all=True)
    sizes = [(19, 26)] + [(math.ceil(19 / 2**i), math.ceil(26 / 2**i)) for i in range(4)]
    assert [tuple(o.shape) for o in outputs] == [tuple(u.shape) for u in uncertainties] == [(2, 2, *s) for s in sizes]


def test_one_value_for_every_level_is_repeated():
    net = S2Former('small', num_heads=2, window_size=4, expand_ratio=3)
    assert net.config['num_heads'] == [2] * 5
    assert net.config['window_size'] == [4] * 4
    assert net.config['expand_ratio'] == [3] * 4


@pytest.mark.parametrize(
    ('windows', 'multiple'), [(8, 64), ((8, 8, 8, 8), 64), (1, 16), (2, 16), (4, 32), (3, 48), ((4, 2, 1, 1), 16)]
)
def test_pad_multiple_holds_the_strides_and_whole_windows(windows, multiple):
    """16 for the four stride-2 stages, and scale i (2**i smaller) holds whole windows: lcm(16, 2**i * ws_i)."""
    net = S2Former('small', window_size=windows, dims=[48, 48, 48, 48, 64])
    assert net.pad_multiple == multiple


def test_window_size_one_pads_to_the_strides():
    torch.manual_seed(0)
    net = S2Former('small', window_size=1)
    with torch.no_grad():
        out = net(torch.rand(1, 3, 9, 20))
    assert out.shape == (1, 3, 9, 20) and torch.isfinite(out).all()


@pytest.mark.parametrize(
    ('name', 'value', 'n'),
    [
        ('dims', [16, 16, 32, 32], 5),
        ('num_heads', [1, 2, 4, 8, 16, 32], 5),
        ('window_size', [8, 8, 8], 4),
        ('expand_ratio', [2, 2, 2, 2, 2], 4),
        ('num_conv_blocks', [1, 1], 4),
        ('num_reconstruction_blocks', [2, 2, 2, 2, 2], 4),
    ],
)
def test_per_level_option_of_the_wrong_length_is_refused_by_name(name, value, n):
    with pytest.raises(ValueError, match=rf'^{name} needs {n} values, got {len(value)}$'):
        S2Former('small', **{name: value})


@pytest.mark.parametrize('ratio', [1, [2, 2, 1, 2], 1.0])
def test_expand_ratio_one_is_refused(ratio):
    with pytest.raises(ValueError, match=r'^expand_ratio 1 is not supported \(the official block changes'):
        S2Former('small', expand_ratio=ratio)


def test_narrow_first_width_is_refused_and_sixteen_accepted():
    with pytest.raises(ValueError, match=r'^dims\[0\] must be at least 16 \(the refinement gates reduce'):
        S2Former('small', dims=[8, 16, 32, 32, 64])
    net = S2Former('small', dims=[16, 8, 16, 16, 16])  # only the first width has the lower bound
    assert net.config['dims'] == [16, 8, 16, 16, 16]


@pytest.mark.parametrize('cls', [blocks.GlobalAttention, blocks.LocalReconstruction, blocks.SparseSamplingAttention])
def test_heads_that_do_not_divide_the_width_are_refused(cls):
    args = (12, 5) if cls is blocks.GlobalAttention else (12, 5, 4)
    with pytest.raises(ValueError, match='^dim 12 is not divisible by num_heads 5$'):
        cls(*args)


# ------------------------------------------------------------------------------------- one-block decoder stages
def test_decoder_stage_of_one_block_accepts_any_width_and_runs_without_the_local_modulation():
    """One block (sparse sampling attention only): the width need not be a multiple of the window, and the local
    reconstruction's modulation (for a second block) is not built."""
    torch.manual_seed(0)
    layer = blocks.ReconstructionLayer(1, 12, 2, 8)
    x, var = torch.randn(1, 12, 16, 8), torch.randn(1, 12, 16, 8)
    with torch.no_grad():
        got = layer(x, var)
        expected = layer[0](x.permute(0, 2, 3, 1), udr.ssa_constraint(var)).permute(0, 3, 1, 2)
    assert torch.equal(got, expected)


@pytest.mark.parametrize('depth', [2, 3])
def test_decoder_stage_of_several_blocks_needs_a_width_multiple_of_the_window(depth):
    with pytest.raises(ValueError, match='^decoder channels 12 must be a multiple of the window size 8$'):
        blocks.ReconstructionLayer(depth, 12, 2, 8)
    assert len(blocks.ReconstructionLayer(depth, 16, 2, 8)) == depth


def test_traced_sampling_axes_do_not_depend_on_the_default_dtype():
    """Built in float32 like the cached grid, whatever torch's default dtype (an integer ``arange`` would follow it)."""
    default = torch.get_default_dtype()
    axes = []
    try:
        for build_under in (torch.float32, torch.float64):
            torch.set_default_dtype(build_under)
            size = (torch.tensor(24), torch.tensor(40))
            axes.append(blocks._traced_sampling_axes(*size, 8, torch.device('cpu'), torch.float64))
    finally:
        torch.set_default_dtype(default)
    for a, b in zip(*axes, strict=True):
        assert a.dtype == b.dtype == torch.float64
        assert torch.equal(a, b)
