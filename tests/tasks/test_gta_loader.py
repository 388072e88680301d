"""The GTA ``dataset.json`` loader: mapping onto our tools, GTA's answer scoring, format errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from regrpo.errors import InputError
from regrpo.tasks.gta import GTA_TOOL_MAP, GtaFormatError, load_gta, parse_gta_box
from regrpo.tools import default_tools


def _call(name: str, **arguments) -> dict:
    return {
        "role": "assistant",
        "tool_calls": [{"type": "function", "function": {"name": name, "arguments": arguments}}],
    }


def _dataset() -> dict:
    return {
        "0": {
            "tools": [{"name": "OCR"}, {"name": "Calculator"}],
            "files": [{"type": "image", "path": "image/image_1.png", "url": "x"}],
            "dialogs": [
                {"role": "user", "content": "How many days does the bottle last for 5 people?"},
                _call("OCR", image="image/image_1.png"),
                {"role": "tool", "name": "OCR", "content": {"type": "text", "content": "290 SOFTGELS"}},
                _call("Calculator", expression="290 / 5"),
                {"role": "tool", "name": "Calculator", "content": {"type": "text", "content": "58"}},
                {"role": "assistant", "content": "58"},
            ],
            "gt_answer": {"whitelist": [["58", "fifty-eight"]], "blacklist": [["59"]]},
        },
        "1": {
            "tools": [
                {"name": "TextToBbox"},
                {"name": "DrawBox"},
                {"name": "AddText"},
                {"name": "ImageDescription"},
            ],
            "files": [{"type": "image", "path": "image/image_2.png"}],
            "dialogs": [
                {"role": "user", "content": "Box the dog and label it."},
                _call("ImageDescription", image="image/image_2.png"),
                {"role": "tool", "name": "ImageDescription", "content": {"type": "text", "content": "a dog"}},
                _call("TextToBbox", image="image/image_2.png", text="dog", top1=True),
                {
                    "role": "tool",
                    "name": "TextToBbox",
                    "content": {"type": "text", "content": "(10, 12, 50, 60), score 88"},
                },
                _call("DrawBox", image="image/image_2.png", bbox="(10, 12, 50, 60)", annotation="dog"),
                {
                    "role": "tool",
                    "name": "DrawBox",
                    "content": {"type": "image", "content": "image/out_1.png"},
                },
                _call("AddText", image="image/out_1.png", text="good boy", position="mt", color="blue"),
                {
                    "role": "tool",
                    "name": "AddText",
                    "content": {"type": "image", "content": "image/out_2.png"},
                },
            ],
            "gt_answer": None,
        },
        "2": {
            "tools": [{"name": "GoogleSearch"}],
            "files": [],
            "dialogs": [
                {"role": "user", "content": "Describe the weather."},
                _call("GoogleSearch", query="weather", k=20),
            ],
            "gt_answer": ["sunny", "clear sky", "warm"],
        },
    }


@pytest.fixture
def gta_dir(tmp_path) -> Path:
    (tmp_path / "image").mkdir()
    for name, size in (("image_1.png", (120, 80)), ("image_2.png", (200, 100))):
        Image.fromarray(np.full((size[1], size[0], 3), 200, np.uint8)).save(tmp_path / "image" / name)
    (tmp_path / "dataset.json").write_text(json.dumps(_dataset()))
    return tmp_path


def test_queries_load_with_images_tools_and_reference(gta_dir):
    tasks = load_gta(gta_dir)
    assert [t.id for t in tasks] == ["gta-0", "gta-1", "gta-2"]
    first = tasks[0]
    assert first.question.startswith("How many days")
    assert first.images == [str((gta_dir / "image" / "image_1.png").resolve())]
    assert first.tools == ["ocr", "calculator"] and first.unmapped_tools == [] and first.reference_complete
    assert [(s.tool, s.arguments) for s in first.reference] == [
        ("ocr", {"image": "img_0"}),
        ("calculator", {"expression": "290 / 5"}),
    ]


def test_arguments_are_mapped_to_our_names_and_forms(gta_dir):
    task = load_gta(gta_dir)[1]
    assert task.unmapped_tools == ["ImageDescription"] and not task.reference_complete
    detect, draw, add = task.reference
    assert (detect.tool, detect.arguments) == ("detect", {"image": "img_0", "label": "dog"})
    assert (draw.tool, draw.arguments) == (
        "draw_box",
        {"image": "img_0", "box": [10, 12, 50, 60], "label": "dog"},
    )
    # DrawBox's output image became img_1 in the episode; "mt" is the middle top of the 200x100 image.
    assert (add.tool, add.arguments) == (
        "add_text",
        {"image": "img_1", "text": "good boy", "position": [100, 10], "color": "blue"},
    )
    assert task.difficulty == 3


def test_mapped_arguments_validate_against_our_tools(gta_dir):
    tools = {t.name: t for t in default_tools()}
    assert set(GTA_TOOL_MAP.values()) <= tools.keys()
    for task in load_gta(gta_dir):
        for step in task.reference:
            tools[step.tool].validate(step.arguments)  # raises ToolError if the mapping were wrong


def test_check_follows_gta_whitelist_and_blacklist(gta_dir):
    task = load_gta(gta_dir)[0]
    assert task.check("It lasts 58 days.")
    assert task.check("FIFTY-EIGHT days")
    assert not task.check("It lasts 580 days.")  # \b word boundaries
    assert not task.check("58 or 59 days")  # a blacklist alias matched
    assert not task.check(None)


def test_subjective_and_image_queries_are_not_string_scored(gta_dir):
    tasks = load_gta(gta_dir)
    assert [t.answer.kind for t in tasks] == ["objective", "image_generation", "subjective"]
    with pytest.raises(GtaFormatError, match="subjective"):
        tasks[2].check("sunny")
    assert [t.id for t in load_gta(gta_dir, objective_only=True)] == ["gta-0"]
    assert tasks[2].reference[0].arguments == {"query": "weather", "k": 10}


def test_bbox_strings_parse():
    assert parse_gta_box("(34, 240, 1243.6, 1031)") == [34, 240, 1244, 1031]
    with pytest.raises(ValueError, match="bbox"):
        parse_gta_box("(1, 2, 3)")


def test_malformed_files_raise_clear_errors(tmp_path, gta_dir):
    assert issubclass(GtaFormatError, InputError)
    with pytest.raises(GtaFormatError, match="not found"):
        load_gta(tmp_path / "nowhere.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(GtaFormatError, match="not valid JSON"):
        load_gta(bad)
    bad.write_text("[]")
    with pytest.raises(GtaFormatError, match="keyed by query number"):
        load_gta(bad)
    data = _dataset()
    del data["1"]["dialogs"]
    bad.write_text(json.dumps(data))
    with pytest.raises(GtaFormatError, match=r"query 1: field 'dialogs' is missing"):
        load_gta(bad, require_images=False)
    data = _dataset()
    data["1"]["dialogs"][5]["tool_calls"][0]["function"]["arguments"]["bbox"] = "(1, 2)"
    bad.write_text(json.dumps(data))
    with pytest.raises(GtaFormatError, match="query 1: cannot map the DrawBox"):
        load_gta(bad, require_images=False)
    data = _dataset()
    data["0"]["gt_answer"] = {"whitelist": [], "blacklist": None}
    bad.write_text(json.dumps(data))
    with pytest.raises(GtaFormatError, match="whitelist is empty"):
        load_gta(bad, require_images=False)
    (gta_dir / "image" / "image_2.png").unlink()
    with pytest.raises(GtaFormatError, match="query 1: image file"):
        load_gta(gta_dir)
