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
        ("area_luts < 2**20", {"area_luts": 1_182_240}, False),
        ("rows * 2**64 * 2**64 > 2**64 * 2**64", {"rows": 2}, True),  # large, within the bounds
        ("(2**60)**17 > 0 and 2.0**-64 > 0", {}, True),
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


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # Nested powers: each exponent is small, the integer grows without end (four levels
        # took 14 s, five would not finish).
        ("((10**60)**60)**60 > rows", r"\*\* would make an integer of about 11,959 bits; "
                                      r"integers in a constraint stay below 2\*\*1024"),
        ("9**60 * 9**60 * 9**60 * 9**60 * 9**60 * 9**60 > rows",
         r"\* would make an integer of about 1,142 bits"),
        ("0x" + "f" * 300 + " > rows", r"a number of 1,200 bits"),
        ("2**2**2**2**2**2 > rows", r"exponent 65536 is too large"),
        # Repetition and formatting of text or lists build gigabytes from a few characters.
        ("'x' * 10**10 == kind", r"\* needs numbers, got str \* int"),
        ("(1, 2) * 10**9 == kind", r"\* needs numbers, got tuple \* int"),
        ("'%*d' % (10**9, 1) == kind", r"% needs numbers, got str % tuple"),
        ("1 / 0 < rows", r"division by zero"),
    ],
)
def test_a_constant_part_beyond_the_bounds_is_refused_when_loaded(text, message):
    """It failed at every point of the sweep (as 'constraint failed') or stalled it."""
    with pytest.raises(ExpressionError, match=message):
        Expression(text)


def test_a_value_beyond_the_bounds_at_a_point_is_an_expression_error():
    expression = Expression("((rows**60)**60)**60 > 0")  # 64**3600 has 21,601 bits
    with pytest.raises(ExpressionError, match=r"about 21,601 bits"):
        expression.evaluate({"rows": 64})
    with pytest.raises(ExpressionError, match=r"\* needs numbers, got str \* int"):
        Expression("kind * n == ''").evaluate({"kind": "x", "n": 10**10})
    assert Expression("((rows**4)**4)**4 > 0").evaluate({"rows": 64})  # 384 bits


@pytest.mark.parametrize("text", ["-" * 100_000 + "1", "1+" * 100_000 + "1", "not " * 5000 + "a",
                                  "(" * 150 + "a" + ")" * 150 + " + 1" * 150])
def test_nesting_beyond_100_levels_is_refused_in_one_line(text):
    """The parser ran out of memory or recursion: a traceback, and a message of 100,000
    characters had it been caught, as every message quoted the whole text."""
    with pytest.raises(ExpressionError, match=r"nested more than 100 levels deep") as info:
        Expression(text)
    assert len(str(info.value)) < 250
