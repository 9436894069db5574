"""docs/reliability.md's table of bad inputs and faults: every row, numbered in order, names a test that exists
(``tests/<path>.py::test_name``), wherever beside the code it exercises that test lives.
"""

from __future__ import annotations

import re


def test_every_row_of_the_reliability_table_names_a_test():
    import importlib.util
    import sys
    from pathlib import Path

    from helpers import REPO

    rows = [ln for ln in (REPO / 'docs' / 'reliability.md').read_text().splitlines() if re.match(r'\| \d+ \|', ln)]
    assert len(rows) >= 188
    assert [int(r.split('|')[1]) for r in rows] == list(range(1, len(rows) + 1))
    sys.path.insert(0, str(REPO / 'tests'))
    modules = {}
    for row in rows:
        path, name = re.search(r'`(tests/[\w/]+\.py)::(\w+)', row).groups()
        if path not in modules:  # by file: tests/<subpackage>/test_<module>.py share no package
            spec = importlib.util.spec_from_file_location(f'_reliability_{Path(path).stem}', REPO / path)
            modules[path] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(modules[path])
        assert callable(getattr(modules[path], name, None)), row
