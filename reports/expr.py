"""Safe arithmetic expressions for DSE constraints (``rows * cols <= 4096``, ``utilization > 0.3``).

A sweep file is data, not code: constraints are parsed with :mod:`ast` and interpreted node by
node over a whitelist (numbers, strings, names, arithmetic, comparisons, ``and``/``or``/``not``
and a few pure functions). Nothing reaches ``eval``, attribute access or imports, so a sweep file
cannot run arbitrary code on the machines that evaluate it.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

from workloads.errors import ArchsimError

__all__ = ["Expression", "ExpressionError"]


class ExpressionError(ArchsimError):
    """A constraint expression is malformed, unsafe, or cannot be evaluated."""


_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
    ast.Not: operator.not_,
}
_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "min": min,
    "max": max,
    "abs": abs,
    "log2": math.log2,
    "sqrt": math.sqrt,
}
# 2**64 is as large as any hardware quantity gets; a bound stops 9**9**9 from hanging a sweep.
_MAX_EXPONENT = 64


class Expression:
    """A parsed, whitelisted expression.

    Parameters
    ----------
    text
        Python-like syntax: ``+ - * / // % **``, comparisons (chains allowed), ``in`` over a
        literal list, ``and``/``or``/``not``, numbers, quoted strings, names, and the functions
        ``min``, ``max``, ``abs``, ``log2`` and ``sqrt``.

    Attributes
    ----------
    names
        The free names the expression reads; the caller checks them against what it can supply.

    Raises
    ------
    ExpressionError
        On a syntax error or any construct outside the whitelist.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(f"invalid expression {text!r}: {exc.msg}") from None
        names: set[str] = set()
        self._check(tree.body, names)
        self._tree = tree.body
        self.names = frozenset(names)

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"

    def _check(self, node: ast.AST, names: set[str]) -> None:
        if isinstance(node, ast.Name):
            if node.id in _FUNCTIONS:
                raise ExpressionError(f"{self.text!r}: {node.id!r} is a function; call it")
            names.add(node.id)
            return
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, (int, float, str, bool)):
                raise ExpressionError(f"{self.text!r}: unsupported constant {node.value!r}")
            return
        if isinstance(node, ast.Call):
            func = node.func
            if not isinstance(func, ast.Name) or func.id not in _FUNCTIONS or node.keywords:
                allowed = ", ".join(_FUNCTIONS)
                raise ExpressionError(
                    f"{self.text!r}: only these functions may be called, with positional "
                    f"arguments: {allowed}"
                )
            for arg in node.args:
                self._check(arg, names)
            return
        allowed = (ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.List, ast.Tuple)
        ops = (ast.And, ast.Or, ast.Load, *_BINARY, *_UNARY, *_COMPARE)
        if not isinstance(node, allowed):
            raise ExpressionError(
                f"{self.text!r}: {type(node).__name__} is not allowed in a constraint "
                f"(allowed: arithmetic, comparisons, and/or/not, names, numbers, strings)"
            )
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ops):
                continue
            self._check(child, names)

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        """Value of the expression with names bound from ``env``.

        Raises
        ------
        ExpressionError
            When a name is missing from ``env`` or the arithmetic fails (division by zero…).
        """
        try:
            return self._eval(self._tree, env)
        except ExpressionError:
            raise
        except (ArithmeticError, TypeError, ValueError) as exc:
            raise ExpressionError(f"{self.text!r}: {exc}") from None

    def _eval(self, node: ast.AST, env: Mapping[str, Any]) -> Any:
        match node:
            case ast.Constant(value=value):
                return value
            case ast.Name(id=name):
                if name not in env:
                    raise ExpressionError(f"{self.text!r}: name {name!r} has no value here")
                return env[name]
            case ast.BoolOp(op=ast.And(), values=values):
                return all(self._eval(v, env) for v in values)
            case ast.BoolOp(op=ast.Or(), values=values):
                return any(self._eval(v, env) for v in values)
            case ast.UnaryOp(op=op, operand=operand):
                return _UNARY[type(op)](self._eval(operand, env))
            case ast.BinOp(left=left, op=op, right=right):
                a, b = self._eval(left, env), self._eval(right, env)
                if isinstance(op, ast.Pow) and abs(b) > _MAX_EXPONENT:
                    raise ExpressionError(f"{self.text!r}: exponent {b!r} is too large")
                return _BINARY[type(op)](a, b)
            case ast.Compare(left=left, ops=ops, comparators=comparators):
                a = self._eval(left, env)
                for op, right in zip(ops, comparators):
                    b = self._eval(right, env)
                    if not _COMPARE[type(op)](a, b):
                        return False
                    a = b
                return True
            case ast.List(elts=elts) | ast.Tuple(elts=elts):
                return tuple(self._eval(e, env) for e in elts)
            case ast.Call(func=ast.Name(id=name), args=args):
                return _FUNCTIONS[name](*(self._eval(a, env) for a in args))
        raise ExpressionError(f"{self.text!r}: cannot evaluate {type(node).__name__}")
