"""``@tool``: a typed, documented function becomes a schema the model reads and a validator it must pass."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
import pytest
from pydantic import Field

from regrpo.errors import InputError, ToolDefinitionError
from regrpo.tools import FunctionTool, ImageStore, Tool, ToolContext, ToolError, tool


@tool
def scale_box(
    box: list[int],
    factor: Annotated[float, Field(gt=0)],
    ctx: ToolContext,
    mode: Literal["round", "floor"] = "round",
    label: str | None = None,
) -> dict[str, Any]:
    """Scale a box about the origin.

    The description stops at the first blank line; this paragraph is not part of it.

    Args:
        box: [x1, y1, x2, y2] in pixels.
        factor: How much to scale; above 0. Values below 1
            shrink the box.
        mode: How to turn scaled coordinates back into pixels.

    Returns:
        The scaled box and how many images the episode holds.
    """
    scaled = [c * factor for c in box]
    rounded = [round(c) for c in scaled] if mode == "round" else [int(c // 1) for c in scaled]
    return {"box": rounded, "label": label, "images": len(ctx.images)}


# -- the schema ----------------------------------------------------------------------------------------


def test_the_first_docstring_paragraph_is_the_description() -> None:
    assert scale_box.name == "scale_box"
    assert scale_box.description == "Scale a box about the origin."


def test_the_schema_comes_from_type_hints_and_the_args_section() -> None:
    schema = scale_box.parameters_schema()
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["box", "factor"]  # the ones without a default, in signature order
    props = schema["properties"]
    assert list(props) == ["box", "factor", "mode", "label"]  # ctx is not the model's business
    assert props["box"]["type"] == "array" and props["box"]["items"] == {"type": "integer"}
    assert props["box"]["description"] == "[x1, y1, x2, y2] in pixels."
    assert props["factor"]["type"] == "number" and props["factor"]["exclusiveMinimum"] == 0
    assert props["mode"]["enum"] == ["round", "floor"] and props["mode"]["default"] == "round"
    assert props["label"]["default"] is None
    assert "description" not in props["label"]  # not in the Args section
    assert all("title" not in prop for prop in props.values())  # pydantic's titles are noise to a model


def test_a_continuation_line_stays_part_of_the_argument_description() -> None:
    described = scale_box.parameters_schema()["properties"]["factor"]["description"]
    assert described == "How much to scale; above 0. Values below 1 shrink the box."


def test_the_decorated_object_is_a_tool_and_still_callable_directly() -> None:
    assert isinstance(scale_box, FunctionTool)
    assert isinstance(scale_box, Tool)
    out = scale_box([1, 2, 3, 4], 2.0, ToolContext(images=ImageStore()))
    assert out == {"box": [2, 4, 6, 8], "label": None, "images": 0}


def test_invoke_injects_the_context_the_runtime_passes() -> None:
    images = ImageStore()
    images.add(np.zeros((2, 2, 3), np.uint8))
    out = scale_box.invoke({"box": [1, 1, 3, 3], "factor": 1.5, "mode": "floor"}, ToolContext(images=images))
    assert out == {"box": [1, 1, 4, 4], "label": None, "images": 1}


def test_the_parameterised_form_sets_name_description_and_timeout() -> None:
    @tool(name="add_numbers", timeout_s=2.5)
    def add(a: int, b: int = 1) -> int:
        """Add two integers."""
        return a + b

    assert add.name == "add_numbers"
    assert add.timeout_s == 2.5
    assert add.description == "Add two integers."
    assert add.parameters_schema()["required"] == ["a"]
    assert add(2) == 3

    @tool(description="Say hello.")
    def hello() -> str:
        return "hello"

    assert hello.description == "Say hello."
    assert hello.timeout_s is None  # the toolbox's default applies
    assert hello.parameters_schema()["properties"] == {}


# -- definition errors -----------------------------------------------------------------------------------


def _no_hint(a, b: int) -> int:  # type: ignore[no-untyped-def]
    """Add."""
    return a + b


def _star_args(*values: int) -> int:
    """Sum."""
    return sum(values)


def _star_kwargs(**values: int) -> int:
    """Sum."""
    return sum(values.values())


def _no_docstring(a: int) -> int:
    return a


class _Adder:
    """Add two integers."""

    def __call__(self, a: int, b: int) -> int:
        return a + b


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: tool(_no_hint), "parameter 'a' needs a type hint"),
        (lambda: tool(_star_args), "*args/**kwargs"),
        (lambda: tool(_star_kwargs), "*args/**kwargs"),
        (lambda: tool(_no_docstring), "has no description"),
        (lambda: tool(name="has space")(lambda a: a), "is not an identifier"),
        (lambda: tool(lambda x: x), "'<lambda>' is not an identifier"),
        (lambda: tool(name="9lives", description="d")(_no_docstring), "is not an identifier"),
        (lambda: tool(description="d", timeout_s=0)(_no_docstring), "timeout_s must be positive"),
        (lambda: tool(42), "needs a function, got int"),  # type: ignore[call-overload]
        (lambda: tool("calculator"), "needs a function, got str"),  # type: ignore[call-overload]
        (lambda: tool(_Adder()), "is not an identifier; pass name="),
        (lambda: tool(name="adder")(_Adder()), "cannot read the type hints"),
    ],
)
def test_a_function_that_cannot_be_described_raises_tool_definition_error(make: Any, says: str) -> None:
    with pytest.raises(ToolDefinitionError) as caught:
        make()
    assert says in str(caught.value)
    # One except clause catches every bad-input error, ours or a plain ValueError handler.
    assert isinstance(caught.value, InputError)
    assert isinstance(caught.value, ValueError)


def test_a_hint_with_no_json_schema_is_a_definition_error() -> None:
    def takes_a_class(value: type, ctx: ToolContext) -> int:
        """Nothing a model can send."""
        return 0

    with pytest.raises(ToolDefinitionError, match="tool 'takes_a_class' has an unsupported type hint"):
        tool(takes_a_class)


# -- validate() -------------------------------------------------------------------------------------------


def test_validate_coerces_json_values_to_the_declared_types() -> None:
    valid = scale_box.validate({"box": ["1", 2, 3.0, "4"], "factor": "0.5"})
    assert valid == {"box": [1, 2, 3, 4], "factor": 0.5, "mode": "round", "label": None}
    assert all(type(c) is int for c in valid["box"])
    assert "ctx" not in valid  # the runtime adds it at invoke time


@pytest.mark.parametrize(
    ("arguments", "names"),
    [
        ({"box": [1, 2, 3, 4]}, ["factor: Field required"]),
        ({"box": [1, 2, 3, 4], "factor": 1, "colour": "red"}, ["colour: Extra inputs are not permitted"]),
        ({"box": [1, 2, 3, 4], "factor": 0}, ["factor: Input should be greater than 0"]),
        ({"box": [1, "two"], "factor": 1}, ["box.1:"]),
        ({"box": [1, 2, 3, 4], "factor": 1, "mode": "ceil"}, ["mode: Input should be 'round' or 'floor'"]),
        ({}, ["box: Field required", "factor: Field required"]),
    ],
)
def test_validate_rejects_bad_arguments_naming_each_field(
    arguments: dict[str, Any], names: list[str]
) -> None:
    with pytest.raises(ToolError) as caught:
        scale_box.validate(arguments)
    message = caught.value.message
    assert message.startswith("invalid arguments for scale_box: ")
    for name in names:
        assert name in message
    assert caught.value.kind == "ArgInvalid"


def test_validate_rejects_arguments_that_are_not_an_object() -> None:
    with pytest.raises(ToolError, match="arguments must be a JSON object, got list"):
        scale_box.validate([1, 2])  # type: ignore[arg-type]
