"""Every third-party module the code imports is declared in setup.py."""
import ast
import importlib.metadata
import os
import re
import sys

from conftest import REPO_ROOT

SOURCE_DIRS = ("ustumor", "tools", "tests", "benchmarks")
# Installed by tools/install_detectron2.py (not on PyPI under its own name; see setup.py).
NOT_ON_PYPI = {"detectron2"}


def python_files():
    for folder in SOURCE_DIRS:
        for root, _, files in os.walk(os.path.join(REPO_ROOT, folder)):
            yield from (os.path.join(root, name) for name in files if name.endswith(".py"))


def imported_top_level_modules(path):
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module.split(".")[0]


def declared_requirements():
    """Normalised distribution names in setup.py's install_requires and extras_require."""
    with open(os.path.join(REPO_ROOT, "setup.py")) as f:
        tree = ast.parse(f.read())
    call = next(node for node in ast.walk(tree) if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup")
    keywords = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg in ("install_requires", "extras_require")}
    specs = list(keywords.get("install_requires", []))
    for extra in keywords.get("extras_require", {}).values():
        specs += extra
    return {normalise(re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0]) for spec in specs}


def normalise(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_third_party_import_is_declared_in_setup_py():
    local = {os.path.splitext(name)[0] for path in python_files() for name in [os.path.basename(path)]}
    local |= set(SOURCE_DIRS)
    modules = {}
    for path in python_files():
        for module in imported_top_level_modules(path):
            if module not in sys.stdlib_module_names and module not in local and module not in NOT_ON_PYPI:
                modules.setdefault(module, os.path.relpath(path, REPO_ROOT))
    assert modules, "no third-party import found: the scan is broken"
    distributions = importlib.metadata.packages_distributions()
    declared = declared_requirements()
    undeclared = {module: path for module, path in modules.items()
                  if not {normalise(d) for d in distributions.get(module, [module])} & declared}
    assert not undeclared, f"imported but not declared in setup.py (module: first file): {undeclared}"
