"""One test per basicsr 1.4.2 compatibility fix in ``s2former_plugin.compat`` and for plugin discovery."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from helpers import REPO, run

import s2former_plugin
from s2former_plugin import compat


def test_import_basicsr_on_current_torchvision_installs_alias():
    import importlib.util

    import basicsr  # noqa: F401  # would raise ModuleNotFoundError without the alias
    from basicsr.data.degradations import rgb_to_grayscale

    img = torch.rand(3, 4, 5)
    assert torch.allclose(
        rgb_to_grayscale(img), (torch.tensor([0.299, 0.587, 0.114]) @ img.reshape(3, -1)).reshape(1, 4, 5), atol=1e-3
    )
    alias = sys.modules['torchvision.transforms.functional_tensor']
    assert alias.rgb_to_grayscale is rgb_to_grayscale
    assert importlib.util.find_spec('torchvision.transforms.functional_tensor') is not None


def test_plain_import_discovers_plugin_in_fresh_interpreter(tmp_path):
    code = (
        'import sys, basicsr\n'
        'from basicsr.utils.registry import Registry\n'
        'from s2former_plugin import compat\n'
        'print(("s2former_plugin" in sys.modules, Registry.get is compat._registry_get))\n'
    )
    proc = run(['-c', code], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == '(True, True)'


def test_startup_hook_is_lazy(tmp_path):
    # The .pth line runs in every interpreter: it must not import torch or basicsr by itself.
    proc = run(['-c', 'import sys; print(any(m in sys.modules for m in ("torch", "basicsr")))'], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == 'False'


def test_disable_switch(tmp_path):
    code = 'import sys, basicsr.utils.registry; print("s2former_plugin.compat" in sys.modules)'
    proc = run(['-c', code], cwd=tmp_path, S2FORMER_PLUGIN_DISABLE='1')
    # basicsr itself fails to import on current torchvision without the plugin: either outcome proves the switch.
    assert proc.stdout.strip() == 'False' or 'functional_tensor' in proc.stderr


def test_spawned_worker_sees_plugin(tmp_path):
    code = (
        'import multiprocessing as mp\n'
        'def probe(_):\n'
        '    import sys, basicsr\n'
        '    return "s2former_plugin.compat" in sys.modules\n'
        'if __name__ == "__main__":\n'
        '    with mp.get_context("spawn").Pool(1) as pool:\n'
        '        print(pool.map(probe, [0]))\n'
    )
    script = tmp_path / 'probe.py'
    script.write_text(code)
    proc = run([str(script)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == '[True]'


def test_wheel_ships_startup_hook(tmp_path):
    proc = run(
        ['-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', str(tmp_path), str(REPO)],
        cwd=tmp_path,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob('s2former_plugin-*.whl')
    names = zipfile.ZipFile(wheel).namelist()
    assert 's2former_plugin.pth' in names
    assert zipfile.ZipFile(wheel).read('s2former_plugin.pth').decode().strip() == 'import s2former_plugin._hook'
    assert 's2former_plugin/compat/__init__.py' in names and 's2former_plugin/compat/entry.py' in names


def test_register_is_idempotent():
    from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY

    before = [dict(r._obj_map) for r in (ARCH_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY)]
    s2former_plugin.register()
    s2former_plugin.register()  # a second call must not raise "already registered" nor change the registries
    assert [dict(r._obj_map) for r in (ARCH_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY)] == before
    assert 'S2Former' in before[0] and 'S2FormerModel' in before[2]


def test_unknown_type_lists_plugin_and_basicsr_names():
    from basicsr.archs import build_network

    with pytest.raises(KeyError) as err:
        build_network({'type': 'NoSuchNet'})
    msg = str(err.value)
    assert "'NoSuchNet'" in msg and 's2former_plugin provides' in msg and 'SwinIR' in msg


def test_registry_suffix_fallback_still_works():
    from basicsr.utils.registry import ARCH_REGISTRY

    assert ARCH_REGISTRY.get('SRVGGNetCompact').__name__ == 'SRVGGNetCompact'


def _base_model(tmp_path: Path, **opt):
    from basicsr.models.base_model import BaseModel

    return BaseModel({'num_gpu': 0, 'is_train': True, 'dist': False, **opt})


def test_optimizers_beyond_adam(tmp_path):
    model = _base_model(tmp_path)
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = model.get_optimizer('AdamW', params, 1e-3, weight_decay=0.01)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults['weight_decay'] == 0.01
    assert isinstance(model.get_optimizer('Adam', params, 1e-3), torch.optim.Adam)
    with pytest.raises(ValueError, match='optim_g:type.*AdamW'):
        model.get_optimizer('Adamm', params, 1e-3)


def test_cyclic_lr_schedule_follows_the_paper_shape(tmp_path):
    model = _base_model(
        tmp_path, train={'scheduler': {'type': 'CyclicLR', 'base_lr': 7e-4, 'max_lr': 8.4e-4, 'step_size_up': 400}}
    )
    param = torch.nn.Parameter(torch.zeros(1))
    model.optimizers = [model.get_optimizer('Adam', [param], 7e-4)]
    model.schedulers = []
    model.setup_schedulers()
    (sched,) = model.schedulers
    assert isinstance(sched, torch.optim.lr_scheduler.CyclicLR)
    lrs = []
    for it in range(1, 802):
        model.update_learning_rate(it)
        lrs.append(model.get_current_learning_rate()[0])
    # basicsr steps schedulers from iteration 2 on, so the peak (step 400) is reached at iteration 401
    assert max(lrs) == pytest.approx(8.4e-4) and lrs.index(max(lrs)) == 400
    assert lrs[0] == pytest.approx(7e-4) and lrs[800] == pytest.approx(7e-4)
    # basicsr's own schedulers still work
    model.schedulers = []
    model.opt['train']['scheduler'] = {'type': 'MultiStepLR', 'milestones': [2], 'gamma': 0.5}
    model.setup_schedulers()
    assert type(model.schedulers[0]).__name__ == 'MultiStepRestartLR'


def test_resume_state_loads_on_cpu_with_weights_only(tmp_path, monkeypatch):
    exp = tmp_path / 'experiments' / 'run'
    (exp / 'training_states').mkdir(parents=True)
    (exp / 'models').mkdir()
    param = torch.nn.Parameter(torch.ones(3))
    optim = torch.optim.Adam([param], 1e-3)
    param.grad = torch.ones(3)
    optim.step()
    sched = torch.optim.lr_scheduler.CyclicLR(optim, 1e-3, 2e-3, 4, cycle_momentum=False)
    for it in (5, 10):
        compat.atomic_torch_save(
            {'epoch': 1, 'iter': it, 'optimizers': [optim.state_dict()], 'schedulers': [sched.state_dict()]},
            str(exp / 'training_states' / f'{it}.state'),
        )
    monkeypatch.setattr(torch.cuda, 'current_device', lambda: (_ for _ in ()).throw(AssertionError('CUDA touched')))
    opt = {
        'auto_resume': True,
        'name': 'run',
        'network_g': {},
        'path': {'experiments_root': str(exp), 'models': str(exp / 'models')},
    }
    state = compat.load_resume_state(opt)
    assert state['iter'] == 10 and opt['path']['resume_state'].endswith('10.state')
    assert opt['path']['pretrain_network_g'].endswith('net_g_10.pth')
    assert torch.equal(state['optimizers'][0]['state'][0]['exp_avg'], optim.state_dict()['state'][0]['exp_avg'])


def test_atomic_save_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / 'net_g_1.pth'
    compat.atomic_torch_save({'a': torch.ones(1)}, str(target))

    def broken_save(obj, f):
        Path(f).write_bytes(b'partial')
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', broken_save)
    with pytest.raises(OSError):
        compat.atomic_torch_save({'a': torch.zeros(1)}, str(target))
    assert torch.load(target, weights_only=True)['a'].item() == 1.0  # the old checkpoint survives
    assert [p.name for p in tmp_path.iterdir()] == ['net_g_1.pth']


def test_init_dist_uses_gloo_without_cuda(monkeypatch):
    import torch.distributed as dist

    calls = {}
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(torch.cuda, 'set_device', lambda *a: calls.setdefault('set_device', a))
    monkeypatch.setattr(dist, 'init_process_group', lambda backend, **kw: calls.setdefault('backend', backend))
    monkeypatch.setenv('RANK', '1')
    compat.init_dist('pytorch')
    assert calls == {'backend': 'gloo'}


def test_ddp_wraps_cpu_model(tmp_path):
    import torch.distributed as dist

    store = dist.FileStore(str(tmp_path / 'store'), 1)
    dist.init_process_group('gloo', store=store, rank=0, world_size=1)
    try:
        model = _base_model(tmp_path, dist=True)
        net = model.model_to_device(torch.nn.Linear(2, 2))
        assert isinstance(net, torch.nn.parallel.DistributedDataParallel) and net.device_ids is None
    finally:
        dist.destroy_process_group()


def test_active_message_names_plugin():
    assert compat.active_message().startswith(f's2former_plugin {s2former_plugin.__version__} active')


def test_installed_metadata_declares_dependencies():
    from importlib.metadata import requires

    reqs = ' '.join(requires('s2former_plugin') or [])
    for dep in ('basicsr==1.4.2', 'mmengine', 'lmdb', 'opencv-python', 'pyiqa', 'torch'):
        assert dep in reqs, dep
    assert json.dumps(reqs)


def test_checkpoints_are_written_by_rank_zero_only(tmp_path, monkeypatch):
    from basicsr.utils import dist_util

    model = _base_model(tmp_path, path={'models': str(tmp_path), 'training_states': str(tmp_path)})
    model.optimizers, model.schedulers = [], []
    monkeypatch.setattr(dist_util, 'get_dist_info', lambda: (1, 2))
    model.save_network(torch.nn.Linear(1, 1), 'net_g', 5)
    model.save_training_state(1, 5)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(dist_util, 'get_dist_info', lambda: (0, 2))
    model.save_network(torch.nn.Linear(1, 1), 'net_g', 5)
    model.save_training_state(1, 5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['5.state', 'net_g_5.pth']


def test_network_options_are_checked_on_the_meta_device():
    import basicsr  # noqa: F401 - registers the plugin

    from s2former_plugin import compat
    from s2former_plugin.errors import OptionError

    compat.check_network_options({'network_g': {'type': 'S2Former', 'preset': 'small'}})
    with pytest.raises(OptionError, match=r"^network_g: unknown S2Former preset 'smal'"):
        compat.check_network_options({'network_g': {'type': 'S2Former', 'preset': 'smal'}})
    with pytest.raises(OptionError, match=r'^network_g: .*S2Formr'):
        compat.check_network_options({'network_g': {'type': 'S2Formr'}})
    with pytest.raises(OptionError, match=r"^network_d: .*unexpected keyword argument 'widht'"):
        compat.check_network_options({'network_d': {'type': 'S2Former', 'widht': 3}})


def test_num_gpu_above_the_visible_gpus_is_refused():
    import torch

    from s2former_plugin import compat
    from s2former_plugin.errors import OptionError

    n = torch.cuda.device_count()
    compat.check_num_gpu({'num_gpu': n})
    with pytest.raises(OptionError, match=rf'^num_gpu: {n + 2}, but this machine has {n} visible GPU\(s\)'):
        compat.check_num_gpu({'num_gpu': n + 2})


def test_eta_at_the_last_iteration_is_not_negative():
    import basicsr.utils.logger as basicsr_logger

    from s2former_plugin import compat

    compat.apply()
    assert str(basicsr_logger.datetime.timedelta(seconds=-2)) == '0:00:00'
    assert str(basicsr_logger.datetime.timedelta(seconds=75)) == '0:01:15'


def test_train_main_destroys_the_process_group_after_a_finished_run(tmp_path, monkeypatch):
    # basicsr leaves the group to interpreter exit, where gloo's teardown can abort a finished run (exit -6)
    import basicsr.train
    import torch.distributed as dist
    from helpers import free_port

    calls = []
    monkeypatch.setattr(basicsr.train, 'train_pipeline', lambda root: calls.append(root))
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{free_port()}', rank=0, world_size=1)
    try:
        compat.train_main(str(tmp_path))
        assert calls == [str(tmp_path)] and not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
