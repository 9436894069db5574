"""Building any registered arch for the benchmark (plugin registration, extra imports, device choice)."""

from __future__ import annotations

import copy
import importlib

from .options import BenchmarkError


def import_modules(modules: list[str]) -> None:
    """Import the ``imports:`` modules (which register user archs); a failure names the option."""
    for i, mod in enumerate(modules):
        try:
            importlib.import_module(mod)
        except Exception as err:  # noqa: BLE001 - any import failure is reported the same way
            raise BenchmarkError(f'imports[{i}]: cannot import {mod!r}: {type(err).__name__}: {err}') from None


def register_plugin():
    import basicsr  # noqa: F401 - registers the plugin through the startup hook

    from s2former_plugin import register

    register()


def build_net(network_g: dict, where: str = 'network_g'):
    """``basicsr.archs.build_network`` with the failure as a one-line :class:`BenchmarkError`."""
    register_plugin()
    from basicsr.archs import build_network

    try:
        return build_network(copy.deepcopy(network_g))
    except KeyError as err:  # the registry's message (names the plugin's and basicsr's archs)
        raise BenchmarkError(f'{where}:type: {err.args[0] if err.args else err}') from None
    except Exception as err:  # noqa: BLE001 - bad constructor arguments of any arch
        raise BenchmarkError(f'{where}: cannot build {network_g.get("type")}: {type(err).__name__}: {err}') from None


def is_s2former(network_g: dict) -> bool:
    """Whether the arch is (a subclass of) :class:`S2Former`, i.e. is trained by ``S2FormerModel``."""
    register_plugin()
    from basicsr.utils.registry import ARCH_REGISTRY

    from s2former_plugin.archs.s2former_arch import S2Former

    cls = ARCH_REGISTRY._obj_map.get(network_g['type'])
    return isinstance(cls, type) and issubclass(cls, S2Former)


# ----------------------------------------------------------------------------------------------------------------
# Training options
# ----------------------------------------------------------------------------------------------------------------
def pick_device_name(opt: dict) -> str:
    from s2former_plugin.inference import pick_device

    try:
        return pick_device(opt['device'], 'device').type
    except ValueError as exc:
        raise BenchmarkError(str(exc)) from None
