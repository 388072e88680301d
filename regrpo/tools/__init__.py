"""Tools: the ``Tool`` interface, the ``@tool`` decorator, the ``Toolbox`` and the built-in tools."""

from regrpo.tools.base import FunctionTool, Tool, ToolContext, tool
from regrpo.tools.errors import ToolError, TransientToolError
from regrpo.tools.images import ImageInfo, ImageInput, ImageStore, load_image
from regrpo.tools.toolbox import Toolbox, ToolOutcome

__all__ = [
    "FunctionTool",
    "ImageInfo",
    "ImageInput",
    "ImageStore",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolOutcome",
    "Toolbox",
    "TransientToolError",
    "default_tools",
    "load_image",
    "tool",
]


def default_tools() -> list[Tool]:
    """The built-in toolbox: the calculator and the OpenCV image tools."""
    from regrpo.tools.calculator import calculator
    from regrpo.tools.image_ops import IMAGE_TOOLS

    return [calculator, *IMAGE_TOOLS]
