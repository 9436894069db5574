"""Two-node training as docs/training.md states it: two ``torchrun --nnodes=2`` launches, ``--node_rank=0`` and
``--node_rank=1``, one process each, on 127.0.0.1 (gloo, CPU), started at once and training a tiny S2Former with
``-m basicsr.train --launcher pytorch``.

Checked from what the runs leave: the launchers' rendezvous gives node 0 global rank 0 and node 1 global rank 1 of
a world of 2; rank 0's log says world size 2 and logs every iteration's losses and the validation metrics; the
validation images of both ranks' shares are saved; and the losses and metrics equal those of the same options
trained by two processes on one node (``--nproc_per_node=2``): the data each rank reads and the seeds depend on
the global rank only, so the run must not depend on how the ranks are spread over machines.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    Y_METRICS,
    clean_env,
    free_port,
    run_torchrun,
    tiny_s2former_options,
    write_paired_folder,
    write_yaml,
)

pytestmark = pytest.mark.slow

NAME = 's2f_multinode'
TIMEOUT_S = 150  # each launch; a normal run takes a fraction of it
METRICS = Y_METRICS
LOSS_LINE = re.compile(r'\[epoch:\s*\d+, iter:\s*([\d,]+), lr:\(.*?\)\] \[eta: .*?\] (.*)$', re.M)
METRIC_LINE = re.compile(r'# (psnr|ssim): ([-\d.]+)')


def _options(root: Path) -> Path:
    """4 iterations of the small preset on 16x16 crops, validated at 2 and 4 on 3 images (uneven shards)."""
    write_paired_folder(root / 'train', n=4, size=(24, 24))
    write_paired_folder(root / 'val', n=3, size=(20, 28), seed=3)
    opt = tiny_s2former_options(root / 'train', None, name=NAME, total_iter=4, save_freq=2)
    opt['datasets']['val'].update(dataroot_gt=str(root / 'val' / 'gt'), dataroot_lq=str(root / 'val' / 'lq'))
    opt['val'].update(save_img=True, metrics=METRICS)
    return write_yaml(root / 'multinode.yml', opt)


def _kill(proc: subprocess.Popen) -> None:
    """End a launch and the workers it started (its own process group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _two_nodes(cwd: Path, options: Path) -> dict[int, str]:
    """Both launches at once; their output by node rank. One failing or overrunning ends the other."""
    port = free_port()
    procs, outputs = {}, {}
    try:
        for node in (0, 1):
            outputs[node] = cwd / f'node{node}.out'
            cmd = [sys.executable, '-m', 'torch.distributed.run', '--nnodes=2', f'--node_rank={node}',
                   '--nproc_per_node=1', '--master_addr', '127.0.0.1', '--master_port', str(port),
                   '-m', 'basicsr.train', '-opt', str(options), '--launcher', 'pytorch']  # fmt: skip
            with open(outputs[node], 'w') as out:  # a file, not a pipe: a full pipe would stall the run
                procs[node] = subprocess.Popen(
                    cmd, cwd=cwd, env=clean_env(LOGLEVEL='INFO'), stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
        deadline = time.monotonic() + TIMEOUT_S
        while any(p.poll() is None for p in procs.values()):
            failed = [n for n, p in procs.items() if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        for proc in procs.values():
            _kill(proc)
    texts = {n: path.read_text() for n, path in outputs.items()}
    codes = {node: proc.returncode for node, proc in procs.items()}
    logs = '\n'.join(f'--- node {n}:\n{t[-2500:]}' for n, t in texts.items())
    assert codes == {0: 0, 1: 0}, (
        f'exit codes {codes} (-9: killed at the {TIMEOUT_S} s deadline or after the other node failed)\n{logs}'
    )
    return texts


def _training_log(cwd: Path) -> str:
    logs = list((cwd / 'experiments' / NAME).glob(f'train_{NAME}_*.log'))
    assert len(logs) == 1, logs
    return logs[0].read_text()


def _losses(log: str) -> dict[int, str]:
    return {int(it.replace(',', '')): values.strip() for it, values in LOSS_LINE.findall(log)}


@pytest.fixture(scope='module')
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp('multinode')
    options = _options(root)
    (root / 'two_nodes').mkdir()
    (root / 'one_node').mkdir()
    outputs = _two_nodes(root / 'two_nodes', options)
    single = run_torchrun(['-m', 'basicsr.train', '-opt', str(options), '--launcher', 'pytorch'],
                          cwd=root / 'one_node', timeout=TIMEOUT_S)  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    return {
        'outputs': outputs,
        'log': _training_log(root / 'two_nodes'),
        'one_node_log': _training_log(root / 'one_node'),
        'experiment': root / 'two_nodes' / 'experiments' / NAME,
    }


def test_the_launchers_give_node_r_global_rank_r_of_two(runs):
    for node, text in runs['outputs'].items():
        found = re.search(r'Rendezvous complete for workers\. Result:(.*?)event_log_handler', text, re.S)
        assert found, text[-3000:]
        result = found.group(1)
        assert f'group_rank={node}\n' in result and 'group_world_size=2\n' in result, result
        assert f'global_ranks=[{node}]\n' in result and 'global_world_sizes=[2]\n' in result, result
        assert 'master_addr=127.0.0.1' in result


def test_rank_0_logs_a_world_of_two_and_every_iteration(runs):
    log = runs['log']
    assert 'World size (gpu number): 2' in log and 'End of training' in log
    losses = _losses(log)
    assert sorted(losses) == [1, 2, 3, 4]  # print_freq 1
    for values in losses.values():
        names = re.findall(r'(l_\w+): ([-+\d.e]+)', values)
        assert [n for n, _ in names] == ['l_psnr', 'l_udl', 'l_total'], values
        assert all(abs(float(v)) < 1e3 for _, v in names), values  # finite, printed as numbers


def test_validation_metrics_are_logged_and_every_image_saved(runs):
    metrics = METRIC_LINE.findall(runs['log'])
    assert [name for name, _ in metrics] == ['psnr', 'ssim'] * 2  # iterations 2 and 4
    assert all(5 < float(v) < 60 for name, v in metrics if name == 'psnr')
    assert all(-1 <= float(v) <= 1 for name, v in metrics if name == 'ssim')
    saved = sorted(p.name for p in (runs['experiment'] / 'visualization').rglob('*.png'))
    # rank 0 validates images 0 and 2, rank 1 image 1: all three only if both ranks took their share
    assert [n for n in saved if n.endswith('_4.png')] == ['000_4.png', '001_4.png', '002_4.png'], saved


def test_two_nodes_train_exactly_as_two_processes_on_one_node(runs):
    two, one = runs['log'], runs['one_node_log']
    assert _losses(two) == _losses(one)
    assert METRIC_LINE.findall(two) == METRIC_LINE.findall(one)
    assert (runs['experiment'] / 'models' / 'net_g_4.pth').is_file()
    assert (runs['experiment'] / 'training_states' / '4.state').is_file()
