"""Importing a folder of functions (one integration: `<dir>/<integration-id>/**/*.py`) and finding
what it declares. The runner's workers, deploy-time inspection and `nango dryrun` all load through
here, so a folder that loads in one loads in all."""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import traceback
from pathlib import Path

from nango.sdk.definitions import FunctionDefinition, clear_registry, registered
from nango.sdk.errors import SdkError


class BundleLoadError(SdkError):
    """The folder does not import, or declares something invalid; the message names file and line."""


def module_names(root: Path) -> list[str]:
    """The importable module of every `.py` file under `root`, sorted."""
    names: list[str] = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d != "__pycache__"]
        for file in files:
            if not file.endswith(".py") or file.startswith("."):
                continue
            relative = Path(folder, file).relative_to(root)
            parts = list(relative.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
                if not parts:
                    continue
            if not all(part.isidentifier() for part in parts):
                raise BundleLoadError(f"{relative}: file and folder names must be Python identifiers to be imported")
            names.append(".".join(parts))
    return sorted(names)


def _within(path: str, root: Path) -> bool:
    try:
        Path(path).resolve().relative_to(root)
    except ValueError:
        return False
    return True


def describe(exc: BaseException, root: Path) -> str:
    """`file.py, line N: Type: message`, at the deepest line of the folder's own code."""
    if isinstance(exc, SyntaxError) and exc.filename and _within(exc.filename, root):
        where = Path(exc.filename).resolve().relative_to(root)
        return f"{where}, line {exc.lineno}: SyntaxError: {exc.msg}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if _within(f.filename, root)]
    head = f"{type(exc).__name__}: {exc}"
    if not frames:
        return head
    last = frames[-1]
    return f"{Path(last.filename).resolve().relative_to(root)}, line {last.lineno}: {head}"


def _spec_within(spec: importlib.machinery.ModuleSpec, root: Path) -> bool:
    if spec.origin is not None and _within(spec.origin, root):
        return True
    return any(_within(p, root) for p in spec.submodule_search_locations or ())


def _check_shadowing(names: list[str], root: Path) -> None:
    for top in sorted({name.split(".")[0] for name in names}):
        loaded = sys.modules.get(top)
        if loaded is not None:
            origin = getattr(loaded, "__file__", None)
            if origin is None or not _within(origin, root):
                raise BundleLoadError(f"module {top!r} has the name of an installed module: rename it")
            continue
        spec = importlib.util.find_spec(top)
        if spec is not None and not _spec_within(spec, root):
            raise BundleLoadError(f"module {top!r} has the name of an installed module: rename it")


def load_folder(root: Path) -> list[FunctionDefinition]:
    """Import every module under `root` (put first on sys.path) and return what they declared.
    Raises BundleLoadError for a module that does not import and for two functions with one name."""
    root = root.resolve()
    names = module_names(root)
    _check_shadowing(names, root)
    clear_registry()
    sys.path.insert(0, str(root))
    # a folder loaded before in this process may have changed since
    sys.path_importer_cache.pop(str(root), None)
    for name in names:
        try:
            importlib.import_module(name)
        except MemoryError:
            raise
        except Exception as exc:
            raise BundleLoadError(describe(exc, root)) from None
    definitions = registered()
    seen: dict[str, FunctionDefinition] = {}
    for definition in definitions:
        other = seen.get(definition.name)
        if other is not None:
            raise BundleLoadError(
                f"two functions are named {definition.name!r} ({other.module}.{other.attribute} and "
                f"{definition.module}.{definition.attribute}): pass name= to one of them"
            )
        seen[definition.name] = definition
    return definitions


def unload_folder(root: Path) -> None:
    """Forget the modules of `root` (for a process that loads several folders in turn)."""
    prefix = str(root.resolve()) + os.sep
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None) or ""
        paths = [str(p) for p in getattr(module, "__path__", None) or ()]
        if origin.startswith(prefix) or any((p + os.sep).startswith(prefix) for p in paths):
            del sys.modules[name]
    if prefix[:-1] in sys.path:
        sys.path.remove(prefix[:-1])
    clear_registry()


__all__ = ["BundleLoadError", "describe", "load_folder", "module_names", "unload_folder"]
