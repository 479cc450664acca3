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
# Integers past 2**1024 are past every float, so no metric compares with them meaningfully. The
# exponent bound alone let nested powers grow without end: ((((10**60)**60)**60)**60 took 14 s,
# one more level would not finish, and each point of a sweep evaluated it again.
_MAX_INT_BITS = 1024
# Deeper nesting than any constraint needs; Python's parser and this evaluator recurse per level,
# and '-' * 100000 + '1' ended archsim dse with a MemoryError, '1+' * 100000 a RecursionError.
_MAX_DEPTH = 100
_QUOTED_CHARS = 120
_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
           ast.Mod: "%", ast.Pow: "**"}


class Expression:
    """A parsed, whitelisted expression.

    Parameters
    ----------
    text
        Python-like syntax: ``+ - * / // % **``, comparisons (chains allowed), ``in`` over a
        literal list, ``and``/``or``/``not``, numbers, quoted strings, names, and the functions
        ``min``, ``max``, ``abs``, ``log2`` and ``sqrt``. Arithmetic takes numbers only (text
        and lists are compared), with exponents up to 64 and integers below 2**1024.

    Attributes
    ----------
    names
        The free names the expression reads; the caller checks them against what it can supply.

    Raises
    ------
    ExpressionError
        On a syntax error, any construct outside the whitelist, nesting deeper than 100 levels,
        and a part that reads no name but cannot be evaluated (an integer of 2**1024 or more,
        arithmetic on text or lists, a division by zero): those would fail at every point.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        # How messages quote it: a line of its own, even for a text of megabytes.
        self._quoted = (repr(text) if len(text) <= _QUOTED_CHARS else
                        f"{text[:_QUOTED_CHARS]!r}… ({len(text):,} characters)")
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(f"invalid expression {self._quoted}: {exc.msg}") from None
        except (MemoryError, RecursionError):  # the parser's own stack ran out
            raise ExpressionError(f"{self._quoted}: nested more than {_MAX_DEPTH} levels "
                                  f"deep") from None
        names: set[str] = set()
        self._check(tree.body, names, depth=0)
        self._tree = tree.body
        self.names = frozenset(names)
        self._evaluate_constants(tree.body)

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"

    def _check(self, node: ast.AST, names: set[str], depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise ExpressionError(f"{self._quoted}: nested more than {_MAX_DEPTH} levels deep")
        if isinstance(node, ast.Name):
            if node.id in _FUNCTIONS:
                raise ExpressionError(f"{self._quoted}: {node.id!r} is a function; call it")
            names.add(node.id)
            return
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, (int, float, str, bool)):
                raise ExpressionError(f"{self._quoted}: unsupported constant {node.value!r}")
            if isinstance(node.value, int) and node.value.bit_length() > _MAX_INT_BITS:
                raise ExpressionError(f"{self._quoted}: a number of "
                                      f"{node.value.bit_length():,} bits; {_INT_LIMIT}")
            return
        if isinstance(node, ast.Call):
            func = node.func
            if not isinstance(func, ast.Name) or func.id not in _FUNCTIONS or node.keywords:
                allowed = ", ".join(_FUNCTIONS)
                raise ExpressionError(
                    f"{self._quoted}: only these functions may be called, with positional "
                    f"arguments: {allowed}"
                )
            for arg in node.args:
                self._check(arg, names, depth + 1)
            return
        allowed = (ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.List, ast.Tuple)
        ops = (ast.And, ast.Or, ast.Load, *_BINARY, *_UNARY, *_COMPARE)
        if not isinstance(node, allowed):
            raise ExpressionError(
                f"{self._quoted}: {type(node).__name__} is not allowed in a constraint "
                f"(allowed: arithmetic, comparisons, and/or/not, names, numbers, strings)"
            )
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ops):
                continue
            self._check(child, names, depth + 1)

    def _evaluate_constants(self, node: ast.AST) -> None:
        """Evaluate each largest part that reads no name, once: a part that cannot be evaluated
        is refused with the sweep file's line, instead of failing the constraint at every point
        (where it reads as 'constraint failed')."""
        reads_names = any(isinstance(n, ast.Name) and n.id not in _FUNCTIONS
                          for n in ast.walk(node))
        if not reads_names:
            self._value(node, {})
            return
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr) and not isinstance(child, ast.Name):
                self._evaluate_constants(child)

    @property
    def quoted(self) -> str:
        """The text as this expression's errors quote it (``'rows * cols <= 64': …``)."""
        return self._quoted

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        """Value of the expression with names bound from ``env``.

        Raises
        ------
        ExpressionError
            When a name is missing from ``env`` or the arithmetic fails (division by zero…).
        """
        return self._value(self._tree, env)

    def _value(self, node: ast.AST, env: Mapping[str, Any]) -> Any:
        try:
            return self._eval(node, env)
        except ExpressionError:
            raise
        except (ArithmeticError, TypeError, ValueError) as exc:
            raise ExpressionError(f"{self._quoted}: {exc}") from None

    def _eval(self, node: ast.AST, env: Mapping[str, Any]) -> Any:
        match node:
            case ast.Constant(value=value):
                return value
            case ast.Name(id=name):
                if name not in env:
                    raise ExpressionError(f"{self._quoted}: name {name!r} has no value here")
                return env[name]
            case ast.BoolOp(op=ast.And(), values=values):
                return all(self._eval(v, env) for v in values)
            case ast.BoolOp(op=ast.Or(), values=values):
                return any(self._eval(v, env) for v in values)
            case ast.UnaryOp(op=op, operand=operand):
                return _UNARY[type(op)](self._eval(operand, env))
            case ast.BinOp(left=left, op=op, right=right):
                a, b = self._eval(left, env), self._eval(right, env)
                self._refuse_operands(op, a, b)
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
        raise ExpressionError(f"{self._quoted}: cannot evaluate {type(node).__name__}")

    def _refuse_operands(self, op: ast.operator, a: Any, b: Any) -> None:
        """Refuse ``a op b`` before computing it when it is not arithmetic on numbers (``'x' *
        10**10`` or ``'%*d' % (10**9, 1)`` build gigabytes) or its integer result could reach
        2**1024 (nested powers, long products)."""
        symbol = _SYMBOL[type(op)]
        if not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
            raise ExpressionError(f"{self._quoted}: {symbol} needs numbers, got "
                                  f"{type(a).__name__} {symbol} {type(b).__name__}")
        if isinstance(op, ast.Pow) and abs(b) > _MAX_EXPONENT:
            raise ExpressionError(f"{self._quoted}: exponent {b!r} is too large")
        if isinstance(a, int) and isinstance(b, int):
            bits = _result_bits(op, a, b)
            if bits > _MAX_INT_BITS:
                raise ExpressionError(f"{self._quoted}: {symbol} would make an integer of about "
                                      f"{bits:,} bits; {_INT_LIMIT}")


_INT_LIMIT = (f"integers in a constraint stay below 2**{_MAX_INT_BITS} (past every float, so "
              f"nothing could be compared with them)")


def _result_bits(op: ast.operator, a: int, b: int) -> int:
    """An upper bound on the bits of ``a op b`` for integers, known without computing it."""
    la, lb = a.bit_length(), b.bit_length()
    if isinstance(op, ast.Pow):  # a negative exponent gives a float
        return int(b * math.log2(abs(a))) + 1 if b > 0 and a not in (0, 1, -1) else 1
    if isinstance(op, ast.Mult):
        return la + lb
    return max(la, lb) + 1  # + and -; //, % and / never grow
