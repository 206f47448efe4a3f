"""The hand-written stub `_core.pyi` names exactly what the extension exports."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import ferrogen
from ferrogen import _core


def stub_tree() -> ast.Module:
    return ast.parse((Path(ferrogen.__file__).parent / "_core.pyi").read_text())


def test_stub_lists_every_export():
    body = stub_tree().body
    stubbed = {n.name for n in body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    # module constants (`NAME: type`)
    stubbed |= {n.target.id for n in body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    exported = {name for name in dir(_core) if not name.startswith("_")}
    assert stubbed == exported


def test_stub_lists_every_public_method():
    for node in stub_tree().body:
        if not isinstance(node, ast.ClassDef) or issubclass(getattr(_core, node.name), Exception):
            continue
        stubbed = {f.name for f in node.body if isinstance(f, ast.FunctionDef) and not f.name.startswith("_")}
        real = {n for n, _ in inspect.getmembers(getattr(_core, node.name)) if not n.startswith("_")}
        assert stubbed == real, node.name
