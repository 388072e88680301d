"""The calculator tool: right answers, refused code, bounded cost, and errors the model can act on."""

from __future__ import annotations

import asyncio
import math
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regrpo.errors import ErrorType
from regrpo.tools import ImageStore, Toolbox, ToolContext, ToolError
from regrpo.tools.calculator import calculator, evaluate


def _refusal(expression: str) -> str:
    """The message of the ToolError(ArgInvalid) that ``expression`` must raise."""
    with pytest.raises(ToolError) as caught:
        evaluate(expression)
    assert caught.value.kind is ErrorType.ARG_INVALID
    return caught.value.message


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("17*23", 391),
        ("2 + 3 * 4", 14),
        ("(2 + 3) * 4", 20),
        ("2 ** 3 ** 2", 512),  # ** is right-associative
        ("-2 ** 2", -4),  # unary minus binds looser than **
        ("7 // 2", 3),
        ("-7 % 3", 2),
        ("2 ** 10", 1024),
        ("factorial(10)", 3_628_800),
        ("gcd(12, 18)", 6),
        ("abs(-3) + max(1, 5, 2) - min(4, 2)", 6),
        ("pow(2, 10)", 1024),
        ("round(2.5)", 2),
        ("floor(2.7) + ceil(2.1)", 5),
    ],
)
def test_integer_arithmetic_gives_exact_ints(expression: str, expected: int) -> None:
    result = evaluate(expression)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("7 / 2", 3.5),
        ("sqrt(2)", math.sqrt(2)),
        ("math.sqrt(2)", math.sqrt(2)),
        ("pi", math.pi),
        ("math.pi / 2", math.pi / 2),
        ("2 * e", 2 * math.e),
        ("tau", math.tau),
        ("sin(pi / 6)", math.sin(math.pi / 6)),
        ("math.log(8, 2)", 3.0),
        ("log10(1000)", 3.0),
        ("hypot(3, 4)", 5.0),
        ("degrees(pi)", 180.0),
        ("round(2.567, 2)", 2.57),
        ("math.pow(2, 10)", 1024.0),
        ("2 ** -2", 0.25),
        ("0.1 + 0.2", 0.1 + 0.2),  # returned as computed, not rounded
        ("  1.5 * 4  ", 6.0),
    ],
)
def test_real_arithmetic_gives_floats(expression: str, expected: float) -> None:
    result = evaluate(expression)
    assert result == expected
    assert type(result) is float


def test_the_tool_is_the_evaluator_behind_a_one_argument_schema() -> None:
    assert calculator("17*23") == 391
    schema = calculator.parameters_schema()
    assert list(schema["properties"]) == ["expression"]
    assert schema["required"] == ["expression"]


def test_through_the_toolbox_a_bad_expression_is_an_arg_invalid_outcome() -> None:
    toolbox, context = Toolbox([calculator]), ToolContext(images=ImageStore())
    good = asyncio.run(toolbox.call("calculator", {"expression": "17*23"}, context))
    bad = asyncio.run(toolbox.call("calculator", {"expression": "1/0"}, context))
    assert good.ok and good.output == 391
    assert not bad.ok and bad.error_type is ErrorType.ARG_INVALID
    assert bad.message == "division by zero in '1/0'"


@pytest.mark.parametrize(
    ("expression", "mentions"),
    [
        ("__import__('os')", "'__import__' is not allowed"),
        ("().__class__", "attribute access '.__class__' is not allowed"),
        ("().__class__.__bases__[0].__subclasses__()", "not allowed"),
        ("os.system('ls')", "attribute access '.system' is not allowed"),
        ("math.__dict__", "'__dict__' is not allowed"),
        ("math.round(2.5)", "'math.round' is not allowed"),
        ("open('/etc/passwd')", "'open' is not allowed"),
        ("x + 1", "name 'x' is not allowed"),
        ("lambda: 1", "lambda functions are not allowed"),
        ("[n for n in range(3)]", "comprehensions are not allowed"),
        ("(1, 2)[0]", "subscripts are not allowed"),
        ("'a' * 3", "str literals are not allowed"),
        ("b'a'", "bytes literals are not allowed"),
        ("True + 1", "bool literals are not allowed"),
        ("1j", "complex literals are not allowed"),
        ("1 < 2", "comparisons are not allowed"),
        ("1 << 3", "operator LShift is not allowed"),
        ("~1", "operator Invert is not allowed"),
        ("sqrt", "sqrt is a function; call it"),
        ("round(2.5, ndigits=1)", "only positional arguments"),
        ("max(*[1, 2])", "only positional arguments"),
    ],
)
def test_anything_but_arithmetic_is_refused_saying_what(expression: str, mentions: str) -> None:
    assert mentions in _refusal(expression)


def test_caret_is_refused_with_a_hint_to_use_double_star() -> None:
    assert "use ** for powers" in _refusal("2^8")


@pytest.mark.parametrize(
    "expression", ["2**10**10", "9**9**9", "10**10**10**10", "pow(7, 10**6)", "(3**8000)**2"]
)
def test_huge_powers_are_refused_before_they_are_computed(expression: str) -> None:
    started = time.perf_counter()
    assert "over 13,000 bits" in _refusal(expression)
    assert time.perf_counter() - started < 0.5


def test_the_largest_allowed_power_is_still_json_sized() -> None:
    result = evaluate("2**12999")
    assert result == 2**12999
    assert len(str(result)) < 4300  # Python's default int-to-str limit, which json.dumps obeys


def test_factorial_is_bounded() -> None:
    assert evaluate("factorial(1000)") == math.factorial(1000)
    assert "at most 1000" in _refusal("factorial(1001)")
    assert "cannot compute 'factorial(5.5)'" in _refusal("factorial(5.5)")


def test_round_digits_are_bounded() -> None:
    started = time.perf_counter()
    assert "within ±100" in _refusal("round(5, -10**9)")
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("1/0", "division by zero in '1/0'"),
        ("2 + 5 // 0", "division by zero in '5 // 0'"),
        ("7 % (3 - 3)", "division by zero in '7 % (3 - 3)'"),
        ("0 ** -1", "division by zero in '0 ** -1'"),
        ("sqrt(-1)", "cannot compute 'sqrt(-1)': math domain error"),
        ("log(0)", "cannot compute 'log(0)': math domain error"),
        ("(-8) ** (1/3)", "'(-8) ** (1/3)' has a complex result"),
        ("1e308 * 10", "'1e308 * 10' overflows"),
        ("1e999", "'1e999' overflows"),
        ("exp(1000)", "overflow in 'exp(1000)'"),
        ("10.0 ** 400", "overflow in '10.0 ** 400'"),
        ("10**3000 / 3.0", "overflow in '10**3000 / 3.0'"),
        ("sqrt(1, 2)", "cannot compute 'sqrt(1, 2)'"),
    ],
)
def test_arithmetic_failures_name_the_failing_part(expression: str, message: str) -> None:
    assert message in _refusal(expression)


@pytest.mark.parametrize("expression", ["", "1 +", "2 *+* 3", "(1", "1 = 2", "import os"])
def test_unparseable_text_says_it_cannot_be_parsed(expression: str) -> None:
    assert _refusal(expression).startswith("cannot parse expression")


def test_size_and_depth_are_bounded() -> None:
    assert "limit is 500" in _refusal("1+" * 250 + "1")
    assert "nested too deeply" in _refusal("-" * 300 + "1")
    assert evaluate("+".join(["1"] * 250)) == 250  # long but flat sums are fine


_INTS = st.integers(min_value=-(10**6), max_value=10**6)
_OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def _combine(parts: tuple[tuple[str, int], str, tuple[str, int]]) -> tuple[str, int]:
    (left_text, left), op, (right_text, right) = parts
    return f"({left_text} {op} {right_text})", _OPERATIONS[op](left, right)


_PARENTHESISED = st.recursive(
    _INTS.map(lambda n: (str(n), n)),
    lambda children: st.tuples(children, st.sampled_from(sorted(_OPERATIONS)), children).map(_combine),
    max_leaves=20,
)


@given(_PARENTHESISED)
def test_parenthesised_integer_expressions_match_python_arithmetic(case: tuple[str, int]) -> None:
    text, expected = case  # the expected value was built alongside the text, never by eval
    assert evaluate(text) == expected


_TERMS = st.lists(
    st.tuples(st.sampled_from(["+", "-"]), st.lists(_INTS, min_size=1, max_size=4)), min_size=1, max_size=6
)


@given(_TERMS)
def test_unparenthesised_sums_of_products_follow_precedence(terms: list[tuple[str, list[int]]]) -> None:
    text, expected = "0", 0
    for sign, factors in terms:
        text += f" {sign} " + " * ".join(str(f) for f in factors)
        expected += (1 if sign == "+" else -1) * math.prod(factors)
    assert evaluate(text) == expected
