"""Fix plans shrink with ``brevity`` until a long crop call still fits the turn's budget."""

from __future__ import annotations

from regrpo.learning.reflections import MAX_BREVITY, fix_plan
from regrpo.tools import ImageInfo
from regrpo.traces.schema import ToolCall


def test_the_tersest_box_fix_leaves_the_coordinates_to_the_call():
    """A 2802x1580 page's box costs ~20 tokens of digits; at the tersest the plan names no numbers."""
    image = [ImageInfo("img_0", 2802, 1580, "user")]
    bad = ToolCall("crop", {"image": "img_0", "box": [881, 1340, 3030, 1368]})
    good = ToolCall("crop", {"image": "img_0", "box": [881, 1340, 1030, 1368]})
    full = fix_plan(bad, good, image)
    terse = fix_plan(bad, good, image, brevity=MAX_BREVITY)
    assert "1030" in full and "2802x1580" in full
    assert terse == "use a box inside the 2802x1580 img_0"  # the size, not the coordinates
    assert len(terse) < len(full)


def test_the_tersest_value_fix_names_the_argument_not_its_value():
    """A receipt's change expression quoted in the fix plan overran the 112-token budget (133)."""
    bad = ToolCall("calculator", {"expression": "rnd(100 - (8.56 + 24.50 + 14.35 + 6.12), 2)"})
    good = ToolCall("calculator", {"expression": "round(100 - (8.56 + 24.50 + 14.35 + 6.12), 2)"})
    assert "round(100" in fix_plan(bad, good)
    assert fix_plan(bad, good, brevity=MAX_BREVITY) == "correct the expression argument"
