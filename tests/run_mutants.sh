#!/usr/bin/env bash
# Mutation testing with mutmut 3 (pip install mutmut==3.8.1), one module at a time, in a scratch copy of the
# checkout (mutmut writes a mutants/ folder and setup.cfg there; the checkout is left untouched).
#
#   tests/run_mutants.sh MODULE [SCRATCH]      MODULE: tiling | metrics | losses | infer | archs | ranking | models |
#                                              options | setup (parts of models) | bridge | keys | rivals
#   MUTANTS='PATTERN ...' tests/run_mutants.sh MODULE    only the mutants whose names match (fnmatch), e.g.
#                                                       MUTANTS='s2former_plugin.infer.x_main*' for one function
#
# Prints mutmut's counts (killed / survived / ...) as JSON; `cd SCRATCH && PYTHONPATH=$PWD/mutants mutmut results`
# lists the survivors and `mutmut show NAME` shows one. CPU-heavy: runs under nice with two workers.
set -euo pipefail
# The whole script is one block, read before any of it runs: bash reads a script as it goes, so editing this file
# during an hour-long run would otherwise run a mix of the old and the new text.
{

module=${1:?usage: tests/run_mutants.sh MODULE [SCRATCH]}
repo=$(cd "$(dirname "$0")/.." && pwd)
scratch=${2:-${TMPDIR:-/tmp}/s2former_mutants_$module}
python=${PYTHON:-python}
mutmut="$python -m mutmut"

deselect=""
timeout_constant=""
# Subprocesses outside the scratch folder cannot import mutmut's trampolines (benchmark and basicsr.train runs).
rival_subprocesses='tests/test_archs/test_rivals.py::test_benchmark_with_s2former_and_two_rivals
                    tests/test_archs/test_rivals.py::test_training_options_train_with_plain_basicsr'
case $module in
  tiling) files='s2former_plugin/tiling.py'; tests='tests/test_tiling.py tests/test_infer/test_infer_values.py' ;;
  metrics) files='s2former_plugin/metrics/protocols.py'; tests='tests/test_metrics/test_protocols.py tests/test_metrics/test_protocol_values.py tests/test_metrics/test_scoring.py' ;;
  losses) files='s2former_plugin/losses/s2former_loss.py'; tests='tests/test_losses/test_s2former_loss.py tests/test_archs/test_s2former_paper_size.py' ;;
  infer) files='s2former_plugin/infer.py s2former_plugin/infer_run.py s2former_plugin/inference.py'
         tests='tests/test_infer/test_infer_cli.py tests/test_infer/test_infer_values.py tests/test_infer/test_inference.py tests/test_infer/test_infer_cli_edges.py
                tests/test_infer/test_infer_bf16.py' ;;
  archs) files='s2former_plugin/archs/s2former_blocks.py s2former_plugin/archs/s2former_arch.py'
         tests='tests/test_archs/test_s2former_parity_float64.py tests/test_archs/test_s2former_ranking.py tests/test_archs/test_s2former_details.py tests/test_archs/test_s2former_arch.py
                tests/test_archs/test_s2former_paper_size.py tests/test_gpu.py
                tests/test_export.py::test_traced_sampling_axes_equal_cached_ones
                tests/test_models/test_distributed_losses.py::test_frozen_heads_are_exactly_those_the_losses_cannot_reach' ;;
  ranking) files='s2former_plugin/archs/s2former_ranking.py s2former_plugin/archs/s2former_ops.py'
           tests='tests/test_archs/test_s2former_ops.py tests/test_archs/test_s2former_ranking.py tests/test_archs/test_s2former_parity_float64.py' ;;
  models) files='s2former_plugin/models/s2former_model.py s2former_plugin/models/s2former_validation.py'
          tests='tests/test_models/test_s2former_model.py tests/test_models/test_distributed_validation.py tests/test_models/test_amp_accumulate.py
                 tests/test_models/test_distributed_losses.py::test_validation_failure_on_one_rank_stops_all_ranks_at_once'
          # a basicsr.train subprocess cannot import mutmut's trampolines (it runs outside the scratch folder)
          deselect='tests/test_models/test_amp_accumulate.py::test_basicsr_train_counts_optimizer_steps_and_saves_the_scaler'
          # mutmut's time limit is 15 x (the tests' measured call time + timeout_constant) wall seconds, and it
          # does not count fixture set-up: the gloo validation runs in a module fixture (about 6-15 s), so with
          # the default constant of 1 s every validation mutant would "time out".
          timeout_constant=10 ;;
  bridge) files='s2former_plugin/metrics/pyiqa_metric.py s2former_plugin/metrics/scoring.py'
          tests='tests/test_metrics/test_metric_bridge.py tests/test_metrics/test_protocols.py tests/test_metrics/test_pyiqa_metric.py tests/test_metrics/test_scoring.py
                 tests/test_report.py
                 tests/test_metrics/test_protocols_reliability.py::test_non_finite_prediction_is_not_scored
                 tests/test_metrics/test_protocols_reliability.py::test_validation_metric_bridge_refuses_nan_prediction
                 tests/test_metrics/test_scoring_reliability.py::test_report_and_benchmark_reader_refuses_damaged_images' ;;
  keys) files='s2former_plugin/archs/s2former_keys.py s2former_plugin/archs/padding.py'
        tests='tests/test_archs/test_padding.py tests/test_archs/test_s2former_arch.py tests/test_archs/test_s2former_parity_float64.py tests/test_archs/test_s2former_paper_size.py
               tests/test_infer/test_infer_values.py
               tests/test_export.py tests/test_archs/test_rivals.py tests/test_archs/test_s2former_ops.py
               tests/test_official_reliability.py::test_official_checkpoint_loader_refuses_non_finite_weights'
        deselect=$rival_subprocesses ;;
  rivals) files='s2former_plugin/archs/spandrel_rival.py s2former_plugin/archs/restormer_arch.py s2former_plugin/archs/mprnet_arch.py s2former_plugin/archs/nafnet_arch.py'
          tests='tests/test_archs/test_rivals.py tests/test_export.py'
          deselect=$rival_subprocesses ;;
  # The option checks (pure functions of the options) against the option tests alone; every model test builds a
  # model, and so runs them, but none of the others looks at what they refuse.
  options) files='s2former_plugin/models/s2former_options.py'
           tests='tests/test_models/test_s2former_options.py
                  tests/test_models/test_s2former_options_reliability.py::test_training_option_typos_and_types_are_refused
                  tests/test_models/test_s2former_options_reliability.py::test_shipped_options_pass_the_checks
                  tests/test_models/test_amp_accumulate.py::test_bad_amp_and_accumulate_options_are_refused_in_one_line
                  tests/test_models/test_s2former_model.py::test_unknown_loss_key_is_rejected
                  tests/test_models/test_s2former_model.py::test_bad_validation_options_fail_at_build_time'
           MUTANTS=${MUTANTS:-'s2former_plugin.models.s2former_options.x_*'} ;;
  # The model's set-up (construction, training settings, EMA net, freezing, optimizer) with the in-process model
  # tests: each of these mutants would otherwise also start every gloo test (each builds a model). Re-run the
  # survivors under `models` (MUTANTS=...) to try them against the multi-process tests too.
  setup) files='s2former_plugin/models/s2former_model.py'
         tests='tests/test_models/test_model_setup.py tests/test_models/test_s2former_model.py tests/test_models/test_amp_accumulate.py
                tests/test_models/test_distributed_losses.py::test_frozen_heads_are_exactly_those_the_losses_cannot_reach'
         deselect='tests/test_models/test_amp_accumulate.py::test_basicsr_train_counts_optimizer_steps_and_saves_the_scaler
                   tests/test_models/test_amp_accumulate.py::test_accumulate_under_ddp_reduces_once_per_step_and_equals_one_batch'
         timeout_constant=10
         m='s2former_plugin.models.s2former_model.xǁS2FormerModelǁ'
         MUTANTS=${MUTANTS:-"${m}__init__* ${m}init_training_settings* ${m}_build_ema_network* ${m}model_to_device* ${m}setup_optimizers*"} ;;
  *) echo "unknown module: $module" >&2; exit 2 ;;
esac

rm -rf "$scratch"
mkdir -p "$scratch"
(cd "$repo" && git ls-files -z | xargs -0 cp --parents -t "$scratch")
{
  echo '[mutmut]'
  echo 'source_paths = s2former_plugin'
  echo 'only_mutate ='; for f in $files; do echo "    $f"; done
  echo 'pytest_add_cli_args_test_selection ='; for t in $tests; do echo "    $t"; done
  echo 'pytest_add_cli_args ='; echo '    -p'; echo '    no:cacheprovider'; echo '    -p'; echo '    mutmut_tqdm_lock'; echo '    -p'; echo '    mutmut_child_hits'
  for d in ${deselect:-}; do echo '    --deselect'; echo "    $d"; done
  echo 'use_git_change_detection = false'
  echo "timeout_constant = ${timeout_constant:-1}"
} > "$scratch/setup.cfg"

cd "$scratch"
export OMP_NUM_THREADS=1
# The startup hook imports s2former_plugin before mutmut can put mutants/ first on sys.path, and the conftest guard
# refuses a package from anywhere else: generate mutants/ first (the stats step then stops), then run with
# PYTHONPATH pointing there.
nice -n 19 $mutmut run --max-children 2 >mutmut_generate.log 2>&1 || true
test -d mutants/s2former_plugin
# The tests find the option files and docs beside the package (helpers.REPO), which is mutants/ during the run.
cp -r options docs mutants/
# tqdm guards its bars with a multiprocessing lock made once in mutmut's parent process and shared by every forked
# test run: a run killed (timeout) while holding it would leave every later run that opens a bar waiting until
# its own timeout, counted as "timeout". Each test run gets a lock of its own instead.
cat >mutants/mutmut_tqdm_lock.py <<'PY'
import threading

import tqdm


def pytest_configure(config):
    tqdm.tqdm.set_lock(threading.RLock())
PY
# mutmut maps each function to the tests that call it, from trampoline hits recorded in its own process during a
# stats run; hits in processes a test spawns (the 2-process gloo tests) are lost, so mutants of code that only runs
# there (the DDP all-reduces, the NaN stop agreed across ranks) would be tried against in-process tests alone. During
# the stats run each spawned Python writes its hits to a file at exit (sitecustomize.py, imported at start-up from
# PYTHONPATH), and the plugin adds them to the test that spawned it; it also maps every test of a module to each
# function hit in that module (module-scoped fixtures).
cat >mutants/mutmut_child_hits.py <<'PY'
import json
import os
import tempfile
from pathlib import Path

import pytest

_DIR = None


def pytest_configure(config):
    global _DIR
    if os.environ.get('MUTANT_UNDER_TEST') == 'stats':
        _DIR = tempfile.mkdtemp(prefix='mutmut_child_hits_')
        os.environ['MUTMUT_CHILD_HITS'] = _DIR


_MODULE_HITS, _MODULE_TESTS = {}, {}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    if _DIR is None:
        return
    from mutmut.state import state

    for path in Path(_DIR).glob('*.json'):
        state()._stats.update(json.loads(path.read_text()))
        path.unlink()
    # A module-scoped fixture runs (and records its hits) in the set-up of the first test that uses it only, so the
    # tests that check its results would never be run against a mutant: every test of a module counts for every
    # function hit in that module.
    module = item.nodeid.split('::')[0]
    _MODULE_HITS.setdefault(module, set()).update(state()._stats)
    _MODULE_TESTS.setdefault(module, set()).add(item.nodeid.removeprefix('mutants/'))


def pytest_sessionfinish(session):
    if _DIR is None:
        return
    from mutmut.state import state

    for module, functions in _MODULE_HITS.items():
        for function in functions:
            state().tests_by_mangled_function_name[function] |= _MODULE_TESTS[module]
PY
cat >mutants/sitecustomize.py <<'PY'
import os
import sys

if os.environ.get('MUTMUT_DIE_WITH_PARENT') and sys.platform == 'linux':
    # A test run that mutmut kills at its time limit leaves the processes its test spawned (gloo ranks waiting
    # for a peer) running; piled up, they slow every later run into false time-outs. Linux: die with the parent.
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

if os.environ.get('MUTMUT_CHILD_HITS') and os.environ.get('MUTANT_UNDER_TEST') == 'stats':
    import atexit

    def _write_hits():
        import json

        if 'mutmut.state' not in sys.modules:
            return
        names = sorted(sys.modules['mutmut.state'].state()._stats)
        if names:
            path = os.path.join(os.environ['MUTMUT_CHILD_HITS'], f'{os.getpid()}.json')
            with open(path, 'w') as f:
                json.dump(names, f)

    atexit.register(_write_hits)
PY
# shellcheck disable=SC2086 # the patterns are words on purpose (not file names: no globbing)
set -f
MUTMUT_DIE_WITH_PARENT=1 PYTHONPATH="$scratch/mutants" nice -n 19 $mutmut run --max-children 2 ${MUTANTS:-} >mutmut_run.log 2>&1
PYTHONPATH="$scratch/mutants" $mutmut export-cicd-stats >/dev/null
cat mutants/mutmut-cicd-stats.json
exit
}
