"""Load kubernetes_asyncio's generated API and model classes when first used, not all ~850 modules at start-up.

`kubernetes_asyncio.client` (and its `models` and `api` packages) import every generated class in their
`__init__`; the operator uses the ApiClient, the configuration loaders and a handful of models. `install()`,
called before anything imports kubernetes_asyncio, registers these three packages as modules that resolve each
name the real `__init__` would export (read from its `from ... import ...` lines) by importing only that
class's own module on first access. Nothing else changes: the same classes, from the same files.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import types
from pathlib import Path

_FROM = re.compile(r"^from (kubernetes_asyncio\.client[\w.]*) import (\w+)(?: as (\w+))?\s*$", re.M)
_PACKAGES = ("client", "client.models", "client.api")


class LazyPackage(types.ModuleType):
    """A package whose exported names are imported from their own modules on first access."""

    lazy_names: dict[str, tuple[str, str]]

    def __getattr__(self, name: str) -> object:
        target = self.__dict__.get("lazy_names", {}).get(name)
        if target is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        module, attribute = target
        value = getattr(importlib.import_module(module), attribute)
        setattr(self, name, value)
        return value

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self.__dict__.get("lazy_names", {})))


def install() -> bool:
    """Register the lazy packages; False when kubernetes_asyncio is already imported or not installed."""
    if "kubernetes_asyncio" in sys.modules or "kubernetes_asyncio.client" in sys.modules:
        return False
    spec = importlib.util.find_spec("kubernetes_asyncio")
    if spec is None or not spec.submodule_search_locations:
        return False
    root = Path(next(iter(spec.submodule_search_locations)))
    packages: dict[str, LazyPackage] = {}
    for relative in _PACKAGES:
        name = f"kubernetes_asyncio.{relative}"
        folder = root / relative.replace(".", "/")
        init = folder / "__init__.py"
        module = LazyPackage(name)
        module.__file__ = str(init)
        module.__path__ = [str(folder)]
        module.__package__ = name
        text = init.read_text()
        module.lazy_names = {m.group(3) or m.group(2): (m.group(1), m.group(2)) for m in _FROM.finditer(text)}
        version = re.search(r'^__version__ = "([^"]+)"', text, re.M)
        if version:
            module.__version__ = version.group(1)  # type: ignore[attr-defined]
        packages[name] = module
    client = packages["kubernetes_asyncio.client"]
    client.models = packages["kubernetes_asyncio.client.models"]  # type: ignore[attr-defined]
    client.api = packages["kubernetes_asyncio.client.api"]  # type: ignore[attr-defined]
    sys.modules.update(packages)
    return True
