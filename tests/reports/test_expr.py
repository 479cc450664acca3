"""Constraint expressions: evaluated by an AST whitelist, never by eval."""

from __future__ import annotations

import pytest

from reports.expr import Expression, ExpressionError


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("rows * cols <= 4096", {"rows": 64, "cols": 64}, True),
        ("rows * cols <= 4096", {"rows": 64, "cols": 65}, False),
        ("16 <= rows < 64", {"rows": 32}, True),
        ("16 <= rows < 64", {"rows": 64}, False),
        ("not (a or b) and c", {"a": False, "b": False, "c": True}, True),
        ("kind in ['bdwp', 'nm']", {"kind": "nm"}, True),
        ("kind not in ('bdwp',)", {"kind": "bdwp"}, False),
        ("max(rows, cols) / min(rows, cols) <= 2", {"rows": 16, "cols": 64}, False),
        ("log2(rows) % 1 == 0 and abs(-rows) == rows", {"rows": 32}, True),
        ("2 ** n - 1", {"n": 4}, 15),
        ("-x // 3", {"x": 7}, -3),
    ],
)
def test_evaluates(text, env, expected):
    assert Expression(text).evaluate(env) == expected


def test_names_are_collected():
    assert Expression("rows * cols <= max(dsp, 4) and utilization > 0.2").names == {
        "rows", "cols", "dsp", "utilization"
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__import__('os').system('true')", "only these functions"),
        ("rows.__class__", "Attribute is not allowed"),
        ("[x for x in rows]", "ListComp is not allowed"),
        ("lambda: 1", "Lambda is not allowed"),
        ("rows[0]", "Subscript is not allowed"),
        ("open('f')", "only these functions"),
        ("max(a, key=b)", "positional"),
        ("rows = 3", "invalid expression"),
        ("rows <", "invalid expression"),
        ("max", "is a function"),
        ("b'x' == y", "unsupported constant"),
    ],
)
def test_rejects_unsafe_or_malformed(text, message):
    with pytest.raises(ExpressionError, match=message):
        Expression(text)


def test_evaluation_errors_are_expression_errors():
    with pytest.raises(ExpressionError, match="division by zero"):
        Expression("a / b").evaluate({"a": 1, "b": 0})
    with pytest.raises(ExpressionError, match="name 'c' has no value"):
        Expression("a + c").evaluate({"a": 1})
    with pytest.raises(ExpressionError, match="exponent 1000 is too large"):
        Expression("9 ** 1000").evaluate({})
