"""``render_scene``: deterministic, tight in-bounds boxes, honest colours, light overlap."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from regrpo.errors import InputError
from regrpo.tasks.scenes import COLOURS, SHAPE_KINDS, Scene, render_scene


def test_same_seed_same_scene_and_different_seed_different_scene():
    a = render_scene(np.random.default_rng(7))
    b = render_scene(np.random.default_rng(7))
    c = render_scene(np.random.default_rng(8))
    assert np.array_equal(a.image, b.image) and a.objects == b.objects
    assert not np.array_equal(a.image, c.image)


def test_image_shape_dtype_and_object_count():
    for seed in range(20):
        scene = render_scene(np.random.default_rng(seed), width=320, height=240, n_objects=(2, 6))
        assert scene.image.shape == (240, 320, 3) and scene.image.dtype == np.uint8
        assert 1 <= len(scene.objects) <= 6  # placement may drop a shape, never add one


def test_boxes_are_tight_around_the_drawn_colour():
    """Inside each box the object's colour is present; a margin ring outside holds none of it (no overlap)."""
    for seed in range(10):
        scene = render_scene(np.random.default_rng(seed), n_objects=(1, 1))
        (obj,) = scene.objects
        x1, y1, x2, y2 = obj.box
        assert 0 <= x1 < x2 <= 480 and 0 <= y1 < y2 <= 360
        target = np.array(COLOURS[obj.color], dtype=np.int32)
        close = np.abs(scene.image.astype(np.int32) - target).max(axis=2) < 45
        inside = close[y1:y2, x1:x2]
        assert inside.mean() > 0.25  # even a star or cross fills a quarter of its box
        ring = close.copy()
        ring[y1:y2, x1:x2] = False
        assert ring[max(0, y1 - 3) : y2 + 3, max(0, x1 - 3) : x2 + 3].sum() == 0


def test_backgrounds_are_unsaturated_and_objects_saturated():
    for seed in range(10):
        scene = render_scene(np.random.default_rng(seed))
        hsv = cv2.cvtColor(scene.image, cv2.COLOR_RGB2HSV)
        mask = np.ones(scene.image.shape[:2], dtype=bool)
        for obj in scene.objects:
            x1, y1, x2, y2 = obj.box
            mask[y1:y2, x1:x2] = False
        assert np.percentile(hsv[..., 1][mask], 99) < 0.4 * 255


def test_overlap_is_light():
    for seed in range(30):
        scene = render_scene(np.random.default_rng(seed), n_objects=(9, 9))
        for i, a in enumerate(scene.objects):
            for b in scene.objects[i + 1 :]:
                ix = max(0, min(a.box[2], b.box[2]) - max(a.box[0], b.box[0]))
                iy = max(0, min(a.box[3], b.box[3]) - max(a.box[1], b.box[1]))
                smaller = min(
                    (a.box[2] - a.box[0]) * (a.box[3] - a.box[1]),
                    (b.box[2] - b.box[0]) * (b.box[3] - b.box[1]),
                )
                assert ix * iy <= 0.10 * smaller


def test_kinds_and_colours_restrict_the_draw_and_count_matches():
    scene = render_scene(np.random.default_rng(3), kinds=["star"], colours=["blue", "red"], n_objects=(5, 5))
    assert {o.kind for o in scene.objects} == {"star"}
    assert {o.color for o in scene.objects} <= {"blue", "red"}
    assert scene.count("star") == len(scene.objects)
    assert scene.count(color="blue") + scene.count(color="red") == len(scene.objects)


def test_every_kind_and_colour_can_be_drawn():
    seen: set[tuple[str, str]] = set()
    for seed in range(40):
        scene: Scene = render_scene(np.random.default_rng(seed))
        seen |= {(o.kind, o.color) for o in scene.objects}
    assert {k for k, _ in seen} == set(SHAPE_KINDS)
    assert {c for _, c in seen} == set(COLOURS)


@pytest.mark.parametrize(
    "kwargs",
    [{"width": 10}, {"n_objects": (5, 2)}, {"kinds": ["hexagon"]}, {"colours": []}, {"colours": ["mauve"]}],
)
def test_bad_arguments_are_input_errors(kwargs):
    with pytest.raises(InputError):
        render_scene(np.random.default_rng(0), **kwargs)
