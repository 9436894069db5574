"""Resuming (``compat.load_resume_state``) from damaged training states: ``--auto_resume`` skips an unreadable
newest state by name and resumes from the newest readable one, refuses in one line when none is readable; an
explicit ``path:resume_state`` that is truncated or missing is named.

Each test (or parametrised case) is one row of the table in docs/reliability.md.
"""

from __future__ import annotations

import pytest
from helpers import truncate_file


def _states(tmp_path, iters=(5, 10)):
    from s2former_plugin import compat

    exp = tmp_path / 'experiments' / 'run'
    (exp / 'training_states').mkdir(parents=True)
    (exp / 'models').mkdir()
    for it in iters:
        compat.atomic_torch_save(
            {'epoch': 1, 'iter': it, 'optimizers': [], 'schedulers': []}, str(exp / 'training_states' / f'{it}.state')
        )
    opt = {
        'auto_resume': True,
        'name': 'run',
        'network_g': {},
        'path': {'experiments_root': str(exp), 'models': str(exp / 'models')},
    }
    return exp, opt


@pytest.mark.parametrize('damage', ['truncated', 'empty'])
def test_auto_resume_skips_unreadable_newest_state(tmp_path, capsys, damage):
    from s2former_plugin import compat

    exp, opt = _states(tmp_path)
    truncate_file(exp / 'training_states' / '10.state', 0.5 if damage == 'truncated' else 0)
    state = compat.load_resume_state(opt)
    assert state['iter'] == 5 and opt['path']['resume_state'].endswith('5.state')
    assert opt['path']['pretrain_network_g'].endswith('net_g_5.pth')
    err = capsys.readouterr().err
    assert '10.state: unreadable training state' in err and 'resuming from' in err and '5.state instead' in err
    assert any('10.state' in m for m in compat._pending_log)  # written to the training log once it exists
    compat._pending_log.clear()


def test_auto_resume_with_no_readable_state_is_one_line(tmp_path):
    from s2former_plugin import compat

    exp, opt = _states(tmp_path)
    for it in (5, 10):
        truncate_file(exp / 'training_states' / f'{it}.state')
    with pytest.raises(compat.ResumeError, match=r'no readable training state in .*10\.state: unreadable'):
        compat.load_resume_state(opt)
    compat._pending_log.clear()


@pytest.mark.parametrize('problem', ['truncated', 'missing'])
def test_explicit_resume_state_problems_name_the_file(tmp_path, problem):
    from s2former_plugin import compat

    exp, opt = _states(tmp_path)
    path = exp / 'training_states' / ('10.state' if problem == 'truncated' else '99.state')
    if problem == 'truncated':
        truncate_file(path)
    opt.update(auto_resume=False)
    opt['path']['resume_state'] = str(path)
    with pytest.raises(compat.ResumeError, match=str(path)):
        compat.load_resume_state(opt)
