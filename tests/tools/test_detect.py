"""``detect`` / ``count``: the shipped YOLO checkpoint on fresh scenes, HSV colour naming, and no network."""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest

from regrpo.errors import ErrorType, InputError
from regrpo.tasks.scenes import COLOURS, SHAPE_KINDS, render_scene
from regrpo.tools import ImageStore, Toolbox, ToolContext
from regrpo.tools.detect import (
    DEFAULT_CHECKPOINT,
    Detector,
    make_detection_tools,
    name_colour,
    parse_label_query,
)

FRESH_SEED = 424242
"""Scenes for these tests: not the shipped model's training seed (0) nor its validation seed (1000003)."""


def _plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector()


def _call(detector: Detector, name: str, arguments: dict[str, Any], image: np.ndarray) -> Any:
    images = ImageStore()
    images.add(image)
    toolbox = Toolbox(make_detection_tools(detector))
    return asyncio.run(toolbox.call(name, {"image": "img_0", **arguments}, ToolContext(images=images)))


def test_label_queries_split_colour_and_singular_label():
    assert parse_label_query("red circles") == parse_label_query("Red circle") != parse_label_query("circle")
    assert parse_label_query("red circles").color == "red"
    assert parse_label_query("red circles").label == "circle"
    assert parse_label_query("red").label is None and parse_label_query("red").color == "red"
    assert parse_label_query("all the grey objects").color == "gray"
    assert parse_label_query("all the grey objects").label is None
    assert parse_label_query("traffic lights").label == "traffic light"
    assert parse_label_query("boxes").label == "box" and parse_label_query(None).label is None
    assert parse_label_query("crosses").label == parse_label_query("cross").label == "cross"


def test_colour_naming_matches_the_scene_colours():
    rng = np.random.default_rng(FRESH_SEED)
    right = total = 0
    for _ in range(40):
        scene = render_scene(rng)
        for obj in scene.objects:
            x1, y1, x2, y2 = obj.box
            right += name_colour(scene.image[y1:y2, x1:x2]) == obj.color
            total += 1
    assert right / total >= 0.98, f"{right}/{total}"


def test_achromatic_and_plain_colours_are_named():
    def patch(rgb: tuple[int, int, int]) -> np.ndarray:
        return np.full((20, 20, 3), rgb, dtype=np.uint8)

    assert name_colour(patch((250, 250, 250))) == "white"
    assert name_colour(patch((10, 10, 10))) == "black"
    assert name_colour(patch((128, 128, 128))) == "gray"
    for name, rgb in COLOURS.items():
        assert name_colour(patch(rgb)) == name


def test_a_missing_checkpoint_is_an_input_error_naming_the_path(tmp_path):
    missing = tmp_path / "nope" / "yolo11n.pt"
    with pytest.raises(InputError, match=str(missing)):
        Detector(missing)
    with pytest.raises(InputError, match="conf"):
        Detector(conf=1.5)


@pytest.mark.slow
def test_counts_are_right_on_at_least_90_percent_of_fresh_scenes(detector):
    rng = np.random.default_rng(FRESH_SEED)
    right_total = right_kind = right_coloured = 0
    n = 40
    for _ in range(n):
        scene = render_scene(rng)
        kind = str(rng.choice(SHAPE_KINDS))
        colour = str(rng.choice(list(COLOURS)))
        found = detector.detect(scene.image)
        right_total += len(found) == len(scene.objects)
        right_kind += len(detector.find(scene.image, kind)) == scene.count(kind)
        coloured = detector.find(scene.image, f"{colour} {_plural(kind)}")
        right_coloured += len(coloured) == scene.count(kind, colour)
    assert right_total >= 0.9 * n and right_kind >= 0.9 * n and right_coloured >= 0.9 * n, (
        right_total,
        right_kind,
        right_coloured,
    )


@pytest.mark.slow
def test_detect_boxes_match_the_ground_truth(detector):
    rng = np.random.default_rng(FRESH_SEED + 1)
    matched = total = 0
    for _ in range(10):
        scene = render_scene(rng)
        outcome = _call(detector, "detect", {}, scene.image)
        assert outcome.ok, outcome.message
        for obj in scene.objects:
            total += 1
            for found in outcome.output["objects"]:
                b, t = found["box"], obj.box
                ix = max(0, min(b[2], t[2]) - max(b[0], t[0]))
                iy = max(0, min(b[3], t[3]) - max(b[1], t[1]))
                union = (b[2] - b[0]) * (b[3] - b[1]) + (t[2] - t[0]) * (t[3] - t[1]) - ix * iy
                if ix * iy / union > 0.7 and found["label"] == obj.kind and found["color"] == obj.color:
                    matched += 1
                    break
    assert matched >= 0.9 * total, f"{matched}/{total}"


@pytest.mark.slow
def test_tools_filter_count_and_report_mismatched_labels(detector):
    scene = render_scene(
        np.random.default_rng(5), kinds=["star", "circle"], colours=["red", "blue"], n_objects=(6, 6)
    )
    red = _call(detector, "detect", {"label": "red"}, scene.image)
    assert red.ok and all(o["color"] == "red" for o in red.output["objects"])
    assert len(red.output["objects"]) == scene.count(color="red")
    counted = _call(detector, "count", {"text": "blue stars"}, scene.image)
    assert counted.ok and counted.output == {"text": "blue stars", "count": scene.count("star", "blue")}
    unknown = _call(detector, "count", {"text": "dogs"}, scene.image)
    assert not unknown.ok and unknown.error_type == ErrorType.TOOL_MISMATCH
    assert "circle" in unknown.message
    assert detector.labels == list(SHAPE_KINDS)


@pytest.mark.slow
def test_any_checkpoint_path_works(tmp_path):
    copy = tmp_path / "my-detector.pt"
    shutil.copyfile(DEFAULT_CHECKPOINT, copy)
    scene = render_scene(np.random.default_rng(9))
    assert len(Detector(copy).detect(scene.image)) > 0


@pytest.mark.slow
def test_detection_makes_no_network_call(tmp_path):
    """In a fresh process (fresh ultralytics config dir, no font), every socket use raises."""
    script = textwrap.dedent(
        """
        import socket, sys
        attempts = []
        def refuse(*args, **kwargs):
            attempts.append(args[:2])
            raise OSError("network disabled by the test")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        import numpy as np
        from regrpo.tasks.scenes import render_scene
        from regrpo.tools.detect import Detector
        scene = render_scene(np.random.default_rng(1))
        found = Detector().find(scene.image, "circle")
        print(len(found), attempts)
        sys.exit(1 if attempts else 0)
        """
    )
    env = {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().endswith("[]")
    assert (tmp_path / "cache" / "regrpo" / "ultralytics").is_dir()  # its settings went to our cache


def test_a_bad_image_stays_a_clean_image_error_after_ultralytics_is_imported(detector):
    """ultralytics patches PIL.Image.open to pip-install a HEIF plugin on unknown files; we undo it."""
    from PIL import Image

    from regrpo.errors import ImageError
    from regrpo.tools.images import load_image

    detector.detect(render_scene(np.random.default_rng(5)).image)  # ultralytics is imported by now
    with pytest.raises(Image.UnidentifiedImageError):
        Image.open(io.BytesIO(b"not an image"))
    with pytest.raises(ImageError):
        load_image(b"not an image either")
