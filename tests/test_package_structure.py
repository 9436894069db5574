"""The package's import graph has no cycle (imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / 's2former_plugin'


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``)."""
    mods = {}
    for path in PACKAGE.rglob('*.py'):
        parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
        is_pkg = parts[-1] == '__init__'
        mods['.'.join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return mods


def _targets(module: str, is_pkg: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = (module if is_pkg else module.rpartition('.')[0]).split('.')
        base = base[: len(base) - (node.level - 1)]
        full = '.'.join(base + ([node.module] if node.module else []))
    else:
        full = node.module
    return [full] + [f'{full}.{alias.name}' for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    """Edges between the package's modules; an import of an enclosing package's ``__init__`` is not an edge."""
    mods = _modules()
    graph = {}
    for name, (path, is_pkg) in mods.items():
        parts = name.split('.')
        enclosing = {'.'.join(parts[:i]) for i in range(1, len(parts))}
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                deps.update(t for t in _targets(name, is_pkg, node) if t in mods and t != name and t not in enclosing)
        graph[name] = deps
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_cycle_finder_sees_function_level_imports():
    graph = {'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}
    assert find_cycles(graph) == [['a', 'b', 'c', 'a']]
    assert find_cycles({'a': {'b'}, 'b': set()}) == []


def test_graph_reads_relative_and_nested_imports():
    graph = import_graph()
    assert 's2former_plugin.archs.s2former_blocks' in graph['s2former_plugin.archs.s2former_arch']
    assert 's2former_plugin.checkpoint' in graph['s2former_plugin.inference']  # imported inside a function


def test_package_has_no_import_cycle():
    assert find_cycles(import_graph()) == []


#: The command-line entry points (``python -m s2former_plugin.X``): thin, over library modules.
COMMANDS = (
    's2former_plugin.train',
    's2former_plugin.infer',
    's2former_plugin.report',
    's2former_plugin.export',
    's2former_plugin.convert',
)
COMMAND_PACKAGES = ('s2former_plugin.benchmark',)


def _command_of(module: str) -> str | None:
    if module in COMMANDS:
        return module
    return next((p for p in COMMAND_PACKAGES if module == p or module.startswith(p + '.')), None)


def test_commands_share_helpers_through_library_modules():
    """No module imports a command (except modules of the same command package): shared code lives in libraries."""
    bad = []
    for module, deps in import_graph().items():
        for dep in deps:
            target = _command_of(dep)
            if target is not None and target != _command_of(module):
                bad.append(f'{module} -> {dep}')
    assert bad == []


def test_every_error_class_of_the_package_derives_from_the_one_base():
    # one way to fail: every user-facing error carries its one-line message and exit status (errors.S2FormerError)
    import importlib
    import inspect
    import pkgutil

    import s2former_plugin
    from s2former_plugin.errors import S2FormerError

    errors = {}
    for info in pkgutil.walk_packages(s2former_plugin.__path__, 's2former_plugin.'):
        if info.name.endswith('.__main__') or info.name == 's2former_plugin._hook':
            continue
        module = importlib.import_module(info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == info.name and name.endswith('Error'):
                errors[f'{info.name}.{name}'] = cls
    assert len(errors) >= 15
    assert [n for n, c in errors.items() if not issubclass(c, S2FormerError)] == []


def test_torch_load_is_called_in_the_checkpoint_module_only():
    # one reader of torch files (weights only, onto the CPU): checkpoint.torch_load
    import ast

    from helpers import REPO

    calls = []
    for path in sorted((REPO / 's2former_plugin').rglob('*.py')):
        for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
            f = getattr(node, 'func', None)
            if isinstance(f, ast.Attribute) and f.attr == 'load' and getattr(f.value, 'id', None) == 'torch':
                calls.append(str(path.relative_to(REPO)))
    assert calls == ['s2former_plugin/checkpoint.py']


def test_image_files_are_read_and_written_in_imageio_only():
    # one reader (damaged files refused, EXIF orientation applied) and one writer (atomic, disk full named):
    # no other module opens an image file through OpenCV; encoding to bytes in memory (LMDB values, the
    # report's inline pictures) is not a file access
    import ast

    from helpers import REPO

    calls = set()
    for path in sorted((REPO / 's2former_plugin').rglob('*.py')):
        for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
            f = getattr(node, 'func', None)
            if isinstance(f, ast.Attribute) and f.attr in {'imread', 'imwrite', 'imdecode', 'imreadmulti'}:
                if getattr(f.value, 'id', None) == 'cv2':
                    calls.add((str(path.relative_to(REPO)), f.attr))
    assert {module for module, _ in calls} == {'s2former_plugin/imageio.py'}
    assert {attr for _, attr in calls} >= {'imdecode'}


def test_design_page_module_map_matches_the_tree():
    # docs/design.md's module map names every module of the package, and names no module that does not exist
    import re

    from helpers import REPO

    text = (REPO / 'docs' / 'design.md').read_text(encoding='utf-8')
    block = text.split('## Module map', 1)[1].split('```', 2)[1]
    words = set(re.findall(r'[A-Za-z_][A-Za-z0-9_]*', block))
    package = REPO / 's2former_plugin'
    modules = [p for p in package.rglob('*.py') if p.stem not in {'__init__', '__main__'}]
    assert len(modules) > 60
    assert sorted(str(p.relative_to(REPO)) for p in modules if p.stem not in words) == []
    subpackages = sorted(p.name for p in package.iterdir() if (p / '__init__.py').exists())
    assert [d for d in subpackages if f'{d}/' not in block] == []
    named = set(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)\.py\b', block))
    stems = {p.stem for p in package.rglob('*.py')} | {p.stem for p in (REPO / 'datasets_prep').glob('*.py')}
    assert sorted(named - stems) == []


def test_every_command_fails_through_run_command():
    # one way to fail: each command's main hands its body to errors.run_command (`<command>: error: <message>`);
    # train is basicsr's loop, whose entry (compat.train_main) catches S2FormerError itself
    import ast

    from helpers import REPO

    commands, through = [], []
    for path in sorted((REPO / 's2former_plugin').rglob('*.py')):
        tree = ast.parse(path.read_text(encoding='utf-8'))
        main = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == 'main'), None)
        if main is None or path.name == 'train.py':
            continue
        commands.append(str(path.relative_to(REPO)))
        calls = {getattr(n.func, 'id', None) for n in ast.walk(main) if isinstance(n, ast.Call)}
        if 'run_command' in calls:
            through.append(commands[-1])
    assert len(commands) >= 7
    assert through == commands


def test_key_suggestions_come_from_the_one_option_checker():
    # options.py is the one option checker: no other module builds its own "did you mean" with difflib
    from helpers import REPO

    users = sorted(
        str(p.relative_to(REPO))
        for p in (REPO / 's2former_plugin').rglob('*.py')
        if 'difflib' in p.read_text(encoding='utf-8')
    )
    assert users == ['s2former_plugin/options.py']
