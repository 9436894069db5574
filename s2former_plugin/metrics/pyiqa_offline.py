"""Building pyiqa metrics from local weight files only, without changing what other threads see.

pyiqa fetches its weight files while a metric is built (``pyiqa.create_metric``): through its own
``load_file_from_url`` (into ``$TORCH_HOME/hub/pyiqa``) and through ``torch.hub.load_state_dict_from_url``
(torchvision backbones, into ``$TORCH_HOME/hub/checkpoints``), and reads them with ``torch.load(...,
weights_only=False)``. Here a build is *sandboxed*:

* downloads are refused unless ``S2FORMER_ALLOW_DOWNLOAD=1``: a missing file fails fast with
  :class:`MetricUnavailable` naming the file, the folders searched and the variable, and the user's cache folders are
  neither created nor written;
* ``weights_dir`` is looked in before the cache; with downloads allowed they go into the real cache;
* every ``torch.load`` of the build runs with ``weights_only=True`` (no file is fully unpickled);
* pyiqa's own ``print`` lines (``Loading pretrained model ...``, ``Downloading ...``) are dropped.

Design: thread-aware wrappers, installed once, whose sandboxed behaviour applies only to the context (thread) that is
building a metric. The sandbox is a :class:`contextvars.ContextVar`; outside it every wrapper calls the function it
wraps with the same arguments, so other threads calling ``torch.load``, ``torch.hub.get_dir()``, downloading or
printing while a metric is built see the normal behaviour. Nothing is swapped in and out around a build: no
``torch.hub.set_dir``, no change of pyiqa's ``DEFAULT_CACHE_DIR``, no ``sys.stdout`` redirection. The wrappers sit
on ``torch.load``, ``torch.hub.get_dir``, ``torch.hub.download_url_to_file`` and, in the already imported pyiqa and
torchvision modules, on the names bound to pyiqa's ``load_file_from_url``, torch.hub's ``get_dir``,
``download_url_to_file`` and ``load_state_dict_from_url``; pyiqa modules also get a module-level ``print`` that is
silent inside the sandbox. Each build re-checks them (a test's ``monkeypatch`` may have put a function back), and a
module imported later binds the wrapped names from the modules it imports from.

Inside the sandbox (offline, or with a ``weights_dir``) ``torch.hub.get_dir()`` is a temporary folder whose
``checkpoints`` and ``pyiqa`` subfolders hold links to the files of ``weights_dir`` and of the real cache (weights_dir
first); torch.hub and pyiqa create folders there, not in the user's cache. With downloads allowed a file is fetched
into the same place under the real hub folder and linked into the temporary one. Builds are serialised by one lock;
the sandbox is not inherited by threads a build might start.
"""

from __future__ import annotations

import builtins
import contextvars
import functools
import inspect
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import torch

from ..errors import S2FormerError

__all__ = [
    'ALLOW_DOWNLOAD_ENV',
    'MetricUnavailable',
    'UnknownMetric',
    'get_pyiqa_metric',
    'pyiqa_configs',
    'weights_only_loading',
]

ALLOW_DOWNLOAD_ENV = 'S2FORMER_ALLOW_DOWNLOAD'
_SUBDIRS = ('checkpoints', 'pyiqa')  # where torch.hub and pyiqa keep their files under the hub folder
_INNER = '_s2former_inner'  # attribute of a wrapper: the function it wraps


class MetricUnavailable(S2FormerError, RuntimeError):
    """A metric cannot be computed here (typically: its weights are not available offline); ``str()`` says why."""


class UnknownMetric(S2FormerError, ValueError):
    """No metric of that name exists (a typo, not a missing file); ``str()`` names it."""


# ----------------------------------------------------------------------------------------------------------------
# The sandbox of the current context
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Files:
    """Where the sandboxed build finds weight files, and whether it may download missing ones."""

    hub: str  # the temporary hub folder the build sees
    real_hub: str  # the user's hub folder
    searched: tuple[str, ...]
    allowed: bool

    def refusal(self, url: str, name: str) -> MetricUnavailable:
        return MetricUnavailable(
            f'needs {name}: weights not available offline (looked in {", ".join(self.searched)}; would be '
            f'downloaded from {url}); put the file in one of these folders (TORCH_HOME sets the cache root; report: '
            f'--weights-dir) or set {ALLOW_DOWNLOAD_ENV}=1 to allow downloads'
        )

    def fetch(self, url: str, dst: str, download: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Refuse, or download ``url`` into the real cache and link it to ``dst`` (inside the temporary hub)."""
        if not self.allowed:
            raise self.refusal(url, os.path.basename(dst))
        rel = os.path.relpath(os.path.abspath(dst), self.hub)
        cached = dst if rel.startswith(os.pardir) else os.path.join(self.real_hub, rel)
        os.makedirs(os.path.dirname(os.path.abspath(cached)), exist_ok=True)
        download(url, cached, *args, **kwargs)
        if os.path.abspath(cached) != os.path.abspath(dst):
            os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
            os.symlink(os.path.abspath(cached), dst)


@dataclass(frozen=True)
class _Sandbox:
    weights_only: bool
    quiet: bool
    files: _Files | None  # None: files are found and downloaded as usual


_ACTIVE: contextvars.ContextVar[_Sandbox | None] = contextvars.ContextVar('s2former_pyiqa_sandbox', default=None)


def _unwrapped(fn: Callable[..., Any]) -> Callable[..., Any]:
    return getattr(fn, _INNER, fn)


def _wrapper(inner: Callable[..., Any], sandboxed: Callable[..., Any]) -> Callable[..., Any]:
    """``inner`` outside a sandbox; ``sandboxed(box, inner, ...)`` in the context that is building a metric."""

    @functools.wraps(inner)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        box = _ACTIVE.get()
        if box is None:
            return inner(*args, **kwargs)
        return sandboxed(box, inner, *args, **kwargs)

    setattr(wrapper, _INNER, inner)
    return wrapper


def _sandboxed_load(box: _Sandbox, inner: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    if box.weights_only:  # pyiqa asks for weights_only=False; never unpickle arbitrary objects
        kwargs['weights_only'] = True
    return inner(*args, **kwargs)


def _sandboxed_get_dir(box: _Sandbox, inner: Callable[..., Any]) -> str:
    return box.files.hub if box.files is not None else inner()


def _sandboxed_download(box: _Sandbox, inner: Callable[..., Any], url: str, dst: str, *args: Any, **kwargs: Any):
    if box.files is None:
        return inner(url, dst, *args, **kwargs)
    return box.files.fetch(url, dst, inner, *args, **kwargs)


def _sandboxed_state_dict(box: _Sandbox, inner: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """torch.hub's loader, refusing a missing file before it announces a download on stdout."""
    files = box.files
    if files is not None and not files.allowed:
        call = inspect.signature(inner).bind(*args, **kwargs).arguments
        url = call['url']
        name = call.get('file_name') or os.path.basename(urlparse(url).path)
        folder = call.get('model_dir') or os.path.join(files.hub, 'checkpoints')
        if not os.path.exists(os.path.join(folder, name)):
            raise files.refusal(url, name)
    return inner(*args, **kwargs)


def _sandboxed_load_file_from_url(
    box: _Sandbox,
    inner: Callable[..., Any],
    url: str,
    model_dir: str | None = None,
    progress: bool = True,
    file_name: str | None = None,
) -> str:
    """pyiqa's ``load_file_from_url`` against the sandbox's folders; folders are created only to download into."""
    files = box.files
    if files is None:
        return inner(url, model_dir, progress, file_name)
    model_dir = model_dir or os.path.join(files.hub, 'pyiqa')
    cached = os.path.abspath(os.path.join(model_dir, file_name or os.path.basename(urlparse(url).path)))
    if not os.path.exists(cached):
        import pyiqa.utils.download_util as download_util

        download = _unwrapped(download_util.download_url_to_file)  # read now: a stand-in set by a test is used
        files.fetch(url, cached, download, hash_prefix=None, progress=progress)
    return cached


def _pyiqa_print(*args: Any, **kwargs: Any) -> None:
    """``print`` of the pyiqa modules: silent inside the sandbox, the builtin otherwise."""
    box = _ACTIVE.get()
    if box is not None and box.quiet and kwargs.get('file') in (None, sys.stdout):
        return
    builtins.print(*args, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Installing the wrappers
# ----------------------------------------------------------------------------------------------------------------
_install_lock = threading.Lock()
# Names other modules bind with ``from ... import``: (name, sandboxed behaviour, the original's module and name).
_BOUND = (
    ('get_dir', _sandboxed_get_dir, ('torch.hub', 'get_dir')),
    ('download_url_to_file', _sandboxed_download, ('torch.hub', 'download_url_to_file')),
    ('load_state_dict_from_url', _sandboxed_state_dict, ('torch.hub', 'load_state_dict_from_url')),
    ('load_url', _sandboxed_state_dict, ('torch.hub', 'load_state_dict_from_url')),  # torch.utils.model_zoo's name
    ('load_file_from_url', _sandboxed_load_file_from_url, ('pyiqa.utils.download_util', 'load_file_from_url')),
)


def _is_original(fn: Any, origin: tuple[str, str]) -> bool:
    return not hasattr(fn, _INNER) and (getattr(fn, '__module__', None), getattr(fn, '__name__', None)) == origin


def _scanned(mod_name: str) -> bool:
    return mod_name.partition('.')[0] in ('pyiqa', 'torchvision') or mod_name in ('torch.hub', 'torch.utils.model_zoo')


def _install() -> None:
    """Put the wrappers in place; idempotent, and re-run before every build (a ``monkeypatch`` may undo one)."""
    import torch.hub

    with _install_lock:
        # Module attributes looked up at call time: wrapped whatever they hold (a test's stand-in included).
        for module, name, sandboxed in (
            (torch, 'load', _sandboxed_load),
            (torch.hub, 'get_dir', _sandboxed_get_dir),
            (torch.hub, 'download_url_to_file', _sandboxed_download),
        ):
            current = getattr(module, name)
            if not hasattr(current, _INNER):
                setattr(module, name, _wrapper(current, sandboxed))
        # Names bound by ``from ... import`` in modules imported so far; later imports bind the wrapped ones.
        for mod_name, module in list(sys.modules.items()):
            namespace = getattr(module, '__dict__', None)
            if namespace is None or not _scanned(mod_name):
                continue
            for name, sandboxed, origin in _BOUND:
                current = namespace.get(name)
                if current is not None and _is_original(current, origin):
                    setattr(module, name, _wrapper(current, sandboxed))
            if mod_name.partition('.')[0] == 'pyiqa' and 'print' not in namespace:
                module.print = _pyiqa_print  # a module global shadows the builtin for that module only


# ----------------------------------------------------------------------------------------------------------------
# Entering the sandbox
# ----------------------------------------------------------------------------------------------------------------
@contextmanager
def weights_only_loading() -> Iterator[None]:
    """In this context only, ``torch.load`` runs with ``weights_only=True`` whatever the caller asks for.

    pyiqa reads its weight files with ``weights_only=False`` (full unpickling); the project never unpickles
    untrusted files, so a weight file that needs arbitrary objects makes the metric unavailable instead.
    """
    _install()
    token = _ACTIVE.set(_Sandbox(weights_only=True, quiet=False, files=None))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def _real_hub() -> str:
    import torch.hub

    return _unwrapped(torch.hub.get_dir)()


def _link_files(hub: str, real_hub: str, weights_dir: str | None) -> None:
    """Fill ``hub/checkpoints`` and ``hub/pyiqa`` with links to the files of ``weights_dir`` and the real cache."""
    for sub in _SUBDIRS:
        os.makedirs(os.path.join(hub, sub))
        for src in (weights_dir, os.path.join(real_hub, sub)):  # weights_dir wins
            if src and os.path.isdir(src):
                for name in os.listdir(src):
                    link, target = os.path.join(hub, sub, name), os.path.join(src, name)
                    if os.path.isfile(target) and not os.path.exists(link):
                        os.symlink(os.path.abspath(target), link)


@contextmanager
def _sandbox(weights_dir: str | None) -> Iterator[None]:
    """Sandbox this context for building a pyiqa metric (see module docstring)."""
    _install()
    allowed = os.environ.get(ALLOW_DOWNLOAD_ENV) == '1'
    if allowed and not weights_dir:  # files found and downloaded as pyiqa and torch.hub do it
        token = _ACTIVE.set(_Sandbox(weights_only=True, quiet=True, files=None))
        try:
            yield
        finally:
            _ACTIVE.reset(token)
        return
    real_hub = _real_hub()
    searched = ([weights_dir] if weights_dir else []) + [os.path.join(real_hub, sub) for sub in _SUBDIRS]
    with tempfile.TemporaryDirectory(prefix='s2former_hub_') as hub:
        _link_files(hub, real_hub, weights_dir)
        files = _Files(hub=hub, real_hub=real_hub, searched=tuple(searched), allowed=allowed)
        token = _ACTIVE.set(_Sandbox(weights_only=True, quiet=True, files=files))
        try:
            yield
        finally:
            _ACTIVE.reset(token)


# ----------------------------------------------------------------------------------------------------------------
# Building (and caching) a metric
# ----------------------------------------------------------------------------------------------------------------
_cache: dict[tuple, Any] = {}
_lock = threading.Lock()


def pyiqa_configs() -> dict:
    """pyiqa's table of metrics (``name -> config``: ``metric_mode``, ``lower_better``, ...)."""
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    return DEFAULT_CONFIGS


def get_pyiqa_metric(metric: str, device: torch.device | str = 'cpu', weights_dir: str | None = None, **opts) -> Any:
    """A cached ``pyiqa.create_metric(metric, **opts)`` built in the sandbox (see module docstring).

    Args:
        metric: pyiqa's name of the metric (``niqe`` here is pyiqa's NIQE).
        device: Where the metric runs.
        weights_dir: A folder of weight files looked in before the torch hub cache.
        **opts: pyiqa options.

    Raises:
        UnknownMetric: pyiqa has no metric of that name.
        MetricUnavailable: the metric cannot be created here; the failure is cached too (per weight folders and
            download setting).
    """
    if metric not in pyiqa_configs():
        raise UnknownMetric(f'unknown metric {metric!r} (not a pyiqa metric name; see pyiqa.list_models())')
    allowed = os.environ.get(ALLOW_DOWNLOAD_ENV) == '1'
    key = (metric, str(device), weights_dir, allowed, _real_hub(), tuple(sorted((k, repr(v)) for k, v in opts.items())))
    with _lock:
        if key not in _cache:
            try:
                import pyiqa

                with _sandbox(weights_dir):
                    _cache[key] = pyiqa.create_metric(metric, device=torch.device(device), **opts)
            except MetricUnavailable as exc:
                _cache[key] = exc
            except Exception as exc:  # noqa: BLE001 - any construction failure makes the metric unavailable
                _cache[key] = MetricUnavailable(f'{type(exc).__name__}: {exc}'.strip())
        value = _cache[key]
    if isinstance(value, MetricUnavailable):
        raise MetricUnavailable(str(value))
    return value
