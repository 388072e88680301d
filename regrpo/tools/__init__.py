"""Tools: the ``Tool`` interface, the ``@tool`` decorator, the ``Toolbox`` and the built-in tools.

The perception tools (``ocr``, ``detect``, ``count``) load their models on first call, so importing
this package never imports easyocr, ultralytics or torch.
"""

from regrpo.tools.base import FunctionTool, Tool, ToolContext, tool
from regrpo.tools.detect import Detection, Detector, make_detection_tools
from regrpo.tools.errors import ToolError, TransientToolError
from regrpo.tools.faults import FaultConfig, FaultCounts, inject_faults
from regrpo.tools.images import ImageInfo, ImageInput, ImageStore, load_image
from regrpo.tools.ocr import OcrEngine, make_ocr_tool
from regrpo.tools.search import BM25Provider, SearchProvider, SearchResult, SearxNGProvider, make_search_tool
from regrpo.tools.toolbox import Toolbox, ToolOutcome

__all__ = [
    "BM25Provider",
    "Detection",
    "Detector",
    "FaultConfig",
    "FaultCounts",
    "FunctionTool",
    "ImageInfo",
    "ImageInput",
    "ImageStore",
    "OcrEngine",
    "SearchProvider",
    "SearchResult",
    "SearxNGProvider",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolOutcome",
    "Toolbox",
    "TransientToolError",
    "default_tools",
    "inject_faults",
    "load_image",
    "make_detection_tools",
    "make_ocr_tool",
    "make_search_tool",
    "tool",
]


def default_tools() -> list[Tool]:
    """The built-in toolbox: calculator, the OpenCV image tools, ocr, detect, count and search.

    ``search`` uses the offline BM25 index over the shipped corpus; the models behind ``ocr``,
    ``detect`` and ``count`` are shared per process and load on their first call.
    """
    from regrpo.tools.calculator import calculator
    from regrpo.tools.detect import count, detect
    from regrpo.tools.image_ops import IMAGE_TOOLS
    from regrpo.tools.ocr import ocr
    from regrpo.tools.search import make_search_tool

    return [calculator, *IMAGE_TOOLS, ocr, detect, count, make_search_tool()]
