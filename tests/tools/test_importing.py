"""A user's tools by import path (``--tool package.module:name``): what resolves, and every clear refusal."""

from __future__ import annotations

import textwrap

import pytest

from regrpo.errors import ToolDefinitionError
from regrpo.tools import Tool, default_tools
from regrpo.tools.importing import import_tools, toolbox_from_names

USER_MODULE = '''
from regrpo.tools import tool


def brightness(image: str) -> float:
    """Mean brightness of an image.

    Args:
        image: Id of the image, like img_0.
    """
    return 128.0


@tool(name="shout")
def shout(text: str) -> str:
    """Upper-case a text.

    Args:
        text: The text.
    """
    return text.upper()


TOOLS = [brightness, shout]
EMPTY = []
NOT_A_TOOL = 42


class Helper:
    pass
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_app_tools.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_app_tools"


def test_a_function_a_tool_and_a_list_all_resolve_to_tools(user_module):
    (brightness,) = import_tools(f"{user_module}:brightness")  # a plain typed function, wrapped
    (shout,) = import_tools(f"{user_module}:shout")
    both = import_tools(f"{user_module}:TOOLS")
    assert isinstance(brightness, Tool) and brightness.name == "brightness"
    assert "Mean brightness" in brightness.description
    assert shout.name == "shout" and [t.name for t in both] == ["brightness", "shout"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no_colon", "must be 'package.module:name'"),
        ("no_such_module_xyz:f", "cannot import tool module 'no_such_module_xyz'"),
        ("{m}:missing", "has no 'missing'"),
        ("{m}:NOT_A_TOOL", "names a int; name a Tool, a typed function or a list of them"),
        ("{m}:Helper", "names a type"),
        ("{m}:EMPTY", "names an empty list"),
    ],
)
def test_a_bad_name_is_a_tool_definition_error_saying_what_is_wrong(user_module, name, message):
    with pytest.raises(ToolDefinitionError) as caught:
        import_tools(name.format(m=user_module))
    assert message in str(caught.value)


def test_the_builtin_toolbox_is_none_and_named_tools_come_after_it(user_module):
    assert toolbox_from_names([]) is None  # the command's own default: reports and cache keys unchanged
    builtin = [t.name for t in default_tools()]
    mixed = toolbox_from_names([f"{user_module}:brightness"])
    only = toolbox_from_names([f"{user_module}:TOOLS"], builtin=False)
    assert mixed is not None and [t.name for t in mixed] == [*builtin, "brightness"]
    assert only is not None and [t.name for t in only] == ["brightness", "shout"]
    with pytest.raises(ToolDefinitionError, match="needs at least one --tool"):
        toolbox_from_names([], builtin=False)
