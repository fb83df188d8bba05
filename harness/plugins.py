"""Finding the modules of a registry package: adding an embedder, metric or protocol is adding a file."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def import_modules(package_name: str, skip: frozenset[str] | set[str] = frozenset()) -> list[ModuleType]:
    """Import every module of ``package_name`` except ``skip`` and private (``_``) ones, in name order."""
    package = importlib.import_module(package_name)
    return [importlib.import_module(f"{package_name}.{info.name}")
            for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name)
            if info.name not in skip and not info.name.startswith("_")]


def add(registry: dict[str, type], cls: type, what: str) -> None:
    """Put ``cls`` into ``registry`` under its ``name``; TypeError when the name is missing or taken."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} needs a non-empty class attribute 'name'")
    if name in registry and registry[name] is not cls:
        raise TypeError(f"{what} name {name!r} is taken by {registry[name].__qualname__}")
    registry[name] = cls
