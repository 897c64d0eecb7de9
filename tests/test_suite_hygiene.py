"""The suite itself: nothing that expires is made when a module is imported.

A token minted at import time starts its lifetime when pytest collects the module, so a module
that runs more than that lifetime later fails for reasons unrelated to the change under test.
Tokens are minted inside the test (or a function-scoped fixture) that sends them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

TESTS = Path(__file__).resolve().parent
# The helpers that mint or sign tokens; a call to one of them at module level mints at import.
MINTERS = frozenset({"make_token", "auth", "admin_auth", "mint_token", "signed", "encode",
                     "unsigned_none_token"})


def _calls_run_at_import(node: ast.AST) -> Iterator[ast.Call]:
    """Calls evaluated when `node` (a module-level statement) runs: not those inside function,
    lambda or class bodies' methods, which run later."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        # Decorators and default values do run at import.
        if not isinstance(node, ast.Lambda):
            for decorator in node.decorator_list:
                yield from _calls_run_at_import(decorator)
        yield from (call for default in (*node.args.defaults, *node.args.kw_defaults)
                    if default is not None for call in _calls_run_at_import(default))
        return
    if isinstance(node, ast.Call):
        yield node
    for child in ast.iter_child_nodes(node):
        yield from _calls_run_at_import(child)


def _name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return call.func.id if isinstance(call.func, ast.Name) else None


def test_no_module_mints_a_token_at_import_time() -> None:
    offenders = [
        f"{path.relative_to(TESTS.parent)}:{call.lineno} {_name(call)}()"
        for path in sorted(TESTS.rglob("*.py"))
        for statement in ast.parse(path.read_text(), str(path)).body
        for call in _calls_run_at_import(statement)
        if _name(call) in MINTERS
    ]
    assert offenders == [], "mint tokens inside the test that uses them: " + ", ".join(offenders)


def test_the_check_sees_what_it_must() -> None:
    source = ("A = auth('root', 'admin')\n"
              "T = [('x', make_token(ttl=1))]\n"
              "L = [lambda: make_token()]\n"
              "def f(h=auth()):\n    return make_token()\n")
    found = [_name(call) for statement in ast.parse(source).body
             for call in _calls_run_at_import(statement) if _name(call) in MINTERS]
    assert found == ["auth", "make_token", "auth"]
