"""The ``calculator`` tool: one arithmetic expression, evaluated by walking its syntax tree.

GTA's Calculator takes "a single Python expression; functions of the math package usable without
import". We keep that contract but never hand the text to ``eval``: it is parsed with
``ast.parse(mode="eval")`` and only a whitelist of nodes is evaluated here, by hand: int and float
literals, ``+ - * / // % **``, unary ``+ -``, the constants ``pi e tau`` and calls to a fixed set of
functions, written ``sqrt(2)`` or ``math.sqrt(2)``. Anything else (names, attributes, strings,
lambdas, subscripts) is refused with a message saying what is not allowed.

Every step is bounded so one call cannot hang or exhaust memory: the text length, the tree's size and
depth, integer results (``MAX_INT_BITS``, estimated *before* a power is computed), factorial's
argument and ``round``'s digits. Division by zero, domain errors, overflow and non-finite results
become ``ToolError(ArgInvalid)`` naming the sub-expression that failed.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

from regrpo.tools.base import tool
from regrpo.tools.errors import ToolError

__all__ = ["calculator", "evaluate"]

Number = int | float

MAX_EXPRESSION_CHARS = 500
MAX_NODES = 1000
"""Syntax-tree nodes (operators included); 500 characters cannot honestly need more."""
MAX_DEPTH = 250
"""Nesting depth of the tree; keeps the recursive walk far from Python's recursion limit."""
MAX_INT_BITS = 13_000
"""About 3,900 decimal digits: under Python's 4,300-digit int-to-str limit, so results stay JSON."""
MAX_FACTORIAL = 1000
MAX_ROUND_DIGITS = 100
"""``round(5, -10**9)`` would build ``10**(10**9)``; digits beyond this are meaningless anyway."""

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}

_REFUSED: dict[type[ast.AST], str] = {
    ast.Lambda: "lambda functions",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.Subscript: "subscripts",
    ast.Compare: "comparisons",
    ast.BoolOp: "and/or",
    ast.IfExp: "if-else expressions",
    ast.Tuple: "tuples",
    ast.List: "lists",
    ast.Set: "sets",
    ast.Dict: "dicts",
    ast.JoinedStr: "strings",
    ast.NamedExpr: "assignments",
}


# The three helpers below raise Python's own exception types; ``_apply`` words them for the model.


def _power(base: Number, exponent: Number) -> Number:
    """``base ** exponent``, refusing integer results over ``MAX_INT_BITS`` before computing them."""
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        # |base|**exponent has about exponent * log2|base| bits; the first test keeps the product finite.
        if exponent > MAX_INT_BITS or exponent * math.log2(abs(base)) > MAX_INT_BITS:
            raise OverflowError(f"the result would have over {MAX_INT_BITS:,} bits")
    return base**exponent


def _factorial(n: Number) -> int:
    if isinstance(n, int) and n > MAX_FACTORIAL:
        raise ValueError(f"factorial's argument must be at most {MAX_FACTORIAL}")
    return math.factorial(n)  # type: ignore[arg-type]  # a float raises TypeError, reported by _apply


def _round(x: Number, ndigits: int | None = None) -> Number:
    if isinstance(ndigits, int) and abs(ndigits) > MAX_ROUND_DIGITS:
        raise ValueError(f"round's digits must be within ±{MAX_ROUND_DIGITS}")
    return round(x, ndigits)


_OPERATORS: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: _power,
}  # fmt: skip

_MATH_FUNCTIONS: dict[str, Callable[..., Number]] = {
    "sqrt": math.sqrt, "sin": math.sin, "cos": math.cos, "tan": math.tan,
    "asin": math.asin, "acos": math.acos, "atan": math.atan, "atan2": math.atan2,
    "log": math.log, "log10": math.log10, "log2": math.log2, "exp": math.exp,
    "floor": math.floor, "ceil": math.ceil, "fabs": math.fabs, "factorial": _factorial,
    "hypot": math.hypot, "degrees": math.degrees, "radians": math.radians, "gcd": math.gcd,
    "pow": math.pow,
}  # fmt: skip
"""Functions reachable as ``math.name(...)``."""

FUNCTIONS: dict[str, Callable[..., Number]] = {
    **_MATH_FUNCTIONS,
    "round": _round, "abs": abs, "min": min, "max": max,
    "pow": _power,  # bare pow is Python's (int-preserving), math.pow always gives a float
}  # fmt: skip
"""Functions reachable by bare name."""


def _segment(source: str, node: ast.AST) -> str:
    return ast.get_source_segment(source, node) or source


def _refuse(node: ast.AST) -> ToolError:
    if isinstance(node, ast.Constant):
        return ToolError(f"{type(node.value).__name__} literals are not allowed; use int or float numbers")
    if isinstance(node, ast.Attribute):
        return ToolError(
            f"attribute access '.{node.attr}' is not allowed; only math.<function> and math.<constant> are"
        )
    what = _REFUSED.get(type(node), type(node).__name__)
    return ToolError(f"{what} are not allowed; the calculator takes numbers, operators and math functions")


def _dotted_name(node: ast.AST) -> str:
    """``x`` for ``x`` and ``math.x``; a ToolError for any other attribute access."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "math":
        return f"math.{node.attr}"
    raise _refuse(node)


def _constant(node: ast.AST) -> float:
    name = _dotted_name(node).removeprefix("math.")
    if name in FUNCTIONS:
        raise ToolError(f"{name} is a function; call it, e.g. {name}(2)")
    if name not in CONSTANTS:
        raise ToolError(f"name {name!r} is not allowed; allowed names: {', '.join(CONSTANTS)}")
    return CONSTANTS[name]


def _function(node: ast.AST) -> Callable[..., Number]:
    name = _dotted_name(node)
    table = _MATH_FUNCTIONS if name.startswith("math.") else FUNCTIONS
    function = table.get(name.removeprefix("math."))
    if function is None:
        raise ToolError(f"function {name!r} is not allowed; allowed functions: {', '.join(FUNCTIONS)}")
    return function


def _checked(value: object, source: str, node: ast.AST) -> Number:
    """``value`` if it is a finite real number of bounded size, else a ToolError naming ``node``."""
    if isinstance(value, complex):
        raise ToolError(f"{_segment(source, node)!r} has a complex result (negative base, fractional power?)")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError(f"{_segment(source, node)!r} overflows (result is not finite)")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolError(f"{_segment(source, node)!r} is too large (over {MAX_INT_BITS:,} bits)")
    return value  # type: ignore[return-value]  # the walk only ever produces int or float


def _apply(function: Callable[..., Number], args: list[Number], source: str, node: ast.AST) -> Number:
    """Run one operation, translating Python's arithmetic exceptions into ToolErrors naming ``node``."""
    try:
        return _checked(function(*args), source, node)
    except ZeroDivisionError:
        raise ToolError(f"division by zero in {_segment(source, node)!r}") from None
    except OverflowError as exc:
        raise ToolError(f"overflow in {_segment(source, node)!r}: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise ToolError(f"cannot compute {_segment(source, node)!r}: {exc}") from None


def _evaluate(node: ast.AST, source: str, depth: int = 0) -> Number:
    if depth > MAX_DEPTH:
        raise ToolError(f"expression is nested too deeply (over {MAX_DEPTH} levels)")
    if isinstance(node, ast.Constant):
        if type(node.value) not in (int, float):  # bool is an int subclass: refused too
            raise _refuse(node)
        return _checked(node.value, source, node)
    if isinstance(node, (ast.Name, ast.Attribute)):
        return _constant(node)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        operand = _evaluate(node.operand, source, depth + 1)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.BitXor):
            raise ToolError(f"'^' is not allowed in {_segment(source, node)!r}; use ** for powers")
        operation = _OPERATORS.get(type(node.op))
        if operation is None:
            raise ToolError(f"operator {type(node.op).__name__} is not allowed; use + - * / // % **")
        left = _evaluate(node.left, source, depth + 1)
        right = _evaluate(node.right, source, depth + 1)
        return _apply(operation, [left, right], source, node)
    if isinstance(node, ast.Call):
        function = _function(node.func)
        if node.keywords or any(isinstance(arg, ast.Starred) for arg in node.args):
            raise ToolError(f"only positional arguments are allowed in {_segment(source, node)!r}")
        args = [_evaluate(arg, source, depth + 1) for arg in node.args]
        return _apply(function, args, source, node)
    if isinstance(node, ast.UnaryOp):
        raise ToolError(f"operator {type(node.op).__name__} is not allowed; use + - * / // % **")
    raise _refuse(node)


def evaluate(expression: str) -> Number:
    """Evaluate ``expression`` safely; a ``ToolError(ArgInvalid)`` says why if it cannot."""
    expression = expression.strip()
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"expression is {len(expression)} characters; the limit is {MAX_EXPRESSION_CHARS}")
    try:
        tree = ast.parse(expression, mode="eval")
    except (SyntaxError, ValueError) as exc:  # ValueError: null bytes in the text
        reason = exc.msg if isinstance(exc, SyntaxError) else str(exc)
        raise ToolError(f"cannot parse expression {expression!r}: {reason}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ToolError(f"expression has too many parts (over {MAX_NODES} syntax nodes)")
    return _evaluate(tree.body, expression)


@tool
def calculator(expression: str) -> Number:
    """Evaluate one arithmetic expression: numbers, + - * / // % **, (), pi, e, math functions (no import).

    Args:
        expression: One Python expression of numbers, + - * / // % **, (), pi, e and math functions.
    """
    return evaluate(expression)
