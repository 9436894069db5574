"""spandrel_support with the real spandrel 0.4.2 loader: S2Former checkpoints of every kind load as an
ImageModelDescriptor equal to our network, no rival's file is claimed, the detection order leaves ours to us, and
the dtype flags say what runs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, SHARED, clean_env

spandrel = pytest.importorskip('spandrel')

from s2former_plugin import spandrel_support  # noqa: E402
from s2former_plugin.archs.s2former_arch import S2Former  # noqa: E402
from s2former_plugin.archs.s2former_keys import ours_state_dict_to_official  # noqa: E402
from s2former_plugin.checkpoint import save_safetensors  # noqa: E402

DATA = Path(__file__).resolve().parent / 'data'
RIVAL_FILES = {p.name: p for d in (SHARED / 'fixtures' / 'rivals', DATA / 'rivals') for p in sorted(d.glob('*.pt'))}


@pytest.fixture(scope='module')
def net():
    torch.manual_seed(8)
    return S2Former(preset='small').eval()


def _without_s2former() -> 'spandrel.ArchRegistry':
    """spandrel's own architectures and the extra ones, in their order, without S2Former."""
    extra = pytest.importorskip('spandrel_extra_arches')
    reg = spandrel.ArchRegistry()
    reg.add(*(a for a in spandrel.MAIN_REGISTRY.architectures() if a.architecture.id != 'S2Former'))
    reg.add(*extra.EXTRA_REGISTRY, ignore_duplicates=True)
    return reg


@pytest.fixture(scope='module')
def registry():
    """spandrel's main registry with spandrel-extra-arches (Restormer, MPRNet, ...) and S2Former installed."""
    reg = _without_s2former()
    assert len(spandrel_support.install(reg)) == 1 and spandrel_support.install(reg) == []  # idempotent
    return reg


@pytest.fixture(scope='module')
def files(net, tmp_path_factory):
    d = tmp_path_factory.mktemp('spandrel')
    sd = net.state_dict()
    torch.save({'params': sd, 'params_ema': sd}, d / 'net_g_5.pth')
    torch.save(sd, d / 'plain.pth')
    torch.save({f'module.{k}': v for k, v in sd.items()}, d / 'ddp.pth')
    save_safetensors(net, d / 'net.safetensors')
    torch.save(ours_state_dict_to_official(sd), d / 'udrs2former_small.pth')
    return d


def test_install_puts_s2former_in_the_main_registry():
    spandrel_support.install()
    assert spandrel_support.ARCH_ID in spandrel.MAIN_REGISTRY
    assert spandrel.MAIN_REGISTRY.architectures('detection')[-1].architecture.id == 'S2Former'  # last: claims least


@pytest.mark.parametrize('name', ['net_g_5.pth', 'plain.pth', 'ddp.pth', 'net.safetensors', 'udrs2former_small.pth'])
def test_every_checkpoint_kind_loads_equal_to_our_network(net, files, registry, name):
    model = spandrel.ModelLoader(registry=registry).load_from_file(files / name)
    assert isinstance(model, spandrel.ImageModelDescriptor) and model.architecture.id == 'S2Former'
    assert isinstance(model.model, S2Former) and model.model.config == net.config
    assert model.purpose == 'Restoration' and model.scale == 1
    assert (model.input_channels, model.output_channels) == (3, 3)
    assert model.size_requirements.none and model.tiling == spandrel.ModelTiling.SUPPORTED
    assert not model.supports_half and not model.supports_bfloat16
    assert 'bottleneck heads 16 (assumed: not in the weights)' in model.tags
    x = torch.rand(1, 3, 29, 43, generator=torch.Generator().manual_seed(1))  # no multiple of anything
    with torch.no_grad():
        expected = net(x).clamp(0, 1)
    assert torch.equal(model(x), expected)


def test_official_release_layout_loads_as_the_paper_network(tmp_path, registry):
    """The authors' udrs2former_*.pth layout (the manifest's keys, shapes and dtypes, in order) loads with the
    paper configuration and its 8,525,361 parameters."""
    manifest = json.loads((DATA / 'official_default_manifest.json').read_text())
    paper = S2Former()
    official = ours_state_dict_to_official(paper.state_dict())
    got = [[k, list(v.shape), str(v.dtype).removeprefix('torch.')] for k, v in official.items()]
    assert sorted(got) == sorted(manifest['state_dict'])
    torch.save(official, tmp_path / 'udrs2former_rain200h.pth')
    model = spandrel.ModelLoader(registry=registry).load_from_file(tmp_path / 'udrs2former_rain200h.pth')
    assert model.architecture.id == 'S2Former' and model.model.config == paper.config
    assert sum(p.numel() for p in model.model.parameters()) == manifest['num_parameters'] == 8525361
    assert all(torch.equal(model.model.state_dict()[k], v) for k, v in paper.state_dict().items())


def test_no_rival_file_is_claimed(registry):
    """Every rival fixture's state dict: not S2Former, raw or canonicalized, and spandrel's answer is the one it
    gives without S2Former installed."""
    assert len(RIVAL_FILES) >= 8, sorted(RIVAL_FILES)
    without = _without_s2former()
    for name, path in RIVAL_FILES.items():
        sd = torch.load(path, map_location='cpu', weights_only=True)['state_dict']
        assert not spandrel_support.detect(sd) and not spandrel_support.detect(spandrel.canonicalize_state_dict(sd))
        for wrapped in ({'params_ema': sd}, {'state_dict': sd}):
            assert not spandrel_support.detect(spandrel.canonicalize_state_dict(wrapped)), name

        def answer(reg, sd=sd):
            try:
                return reg.load(sd).architecture.id
            except spandrel.UnsupportedModelError:
                return 'unsupported'
            except Exception as exc:  # noqa: BLE001 - an arch that detects but fails to load
                return type(exc).__name__

        assert answer(registry) == answer(without) != 'S2Former', name


def test_no_earlier_arch_claims_ours(net, registry):
    """In spandrel's detection order (extra arches included) nothing before S2Former detects an S2Former state dict,
    ours or official."""
    order = registry.architectures('detection')
    ids = [a.architecture.id for a in order]
    before = order[: ids.index('S2Former')]
    for sd in (net.state_dict(), ours_state_dict_to_official(net.state_dict())):
        claimed = [a.architecture.id for a in before if a.detect(sd)]
        assert claimed == []


def test_detection_rejects_partial_and_foreign_keys(net):
    sd = net.state_dict()
    assert spandrel_support.detect(sd)
    partial = {k: v for k, v in sd.items() if not k.startswith('refinement.')}
    assert not spandrel_support.detect(partial)
    official = ours_state_dict_to_official(sd)
    official['extra.weight'] = torch.zeros(1)  # not a key of the official network
    assert not spandrel_support.detect(official)


def test_load_file_uses_the_recorded_configuration(tmp_path):
    torch.manual_seed(9)
    four = S2Former(preset='small', num_heads=(1, 2, 4, 8, 4)).eval()
    save_safetensors(four, tmp_path / 'four.safetensors')
    model = spandrel_support.load_file(tmp_path / 'four.safetensors')
    assert model.model.config == four.config and 'configuration recorded' in model.tags
    x = torch.rand(1, 3, 24, 40, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(model(x), four(x).clamp(0, 1))
    torch.save({'conv.weight': torch.zeros(1)}, tmp_path / 'x.pth')
    with pytest.raises(ValueError, match='cannot infer the S2Former configuration'):
        spandrel_support.load_file(tmp_path / 'x.pth')


def test_low_precision_flags_are_truthful(net, registry, files):
    """The network cast to bfloat16 or float16 is not reliably finite on the CPU (whether an image comes out NaN
    depends on the weights and on the number of threads), so the descriptor refuses both casts."""
    model = spandrel.ModelLoader(registry=registry).load_from_file(files / 'plain.pth')
    assert not model.supports_half and not model.supports_bfloat16
    for cast in (model.bfloat16, model.half):
        with pytest.raises(spandrel.UnsupportedDtypeError):
            cast()


def test_register_installs_into_an_imported_spandrel(files):
    """``import spandrel`` then ``import basicsr`` (the startup hook's register()) is enough for the loader."""
    code = (
        'import spandrel, basicsr; '
        f'm = spandrel.ModelLoader().load_from_file({str(files / "net.safetensors")!r}); '
        'print(type(m).__name__, m.architecture.id)'
    )
    proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=clean_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ['ImageModelDescriptor', 'S2Former']
