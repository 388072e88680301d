"""The OpenCV image tools on synthetic images: exact geometry, new images registered, errors typed."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from regrpo.errors import ErrorType
from regrpo.tools import ImageStore, Toolbox, ToolContext, ToolOutcome, default_tools
from regrpo.tools.image_ops import IMAGE_TOOLS, crop, draw_box, grayscale, rotate, threshold

TOOLBOX = Toolbox(IMAGE_TOOLS)
HEIGHT, WIDTH = 60, 80


def _pattern() -> np.ndarray:
    """A (60, 80, 3) uint8 image whose every pixel differs from its neighbours, so moves show."""
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    return np.stack([rows * 4, cols * 3, (rows * 7 + cols * 11) % 256], axis=-1).astype(np.uint8)


@pytest.fixture
def store() -> ImageStore:
    images = ImageStore()
    assert images.add(_pattern()) == "img_0"
    return images


def _call(store: ImageStore, name: str, **arguments: Any) -> ToolOutcome:
    return asyncio.run(TOOLBOX.call(name, arguments, ToolContext(images=store)))


def _output(store: ImageStore, name: str, **arguments: Any) -> np.ndarray:
    """Run a tool that must succeed and return the image it made."""
    outcome = _call(store, name, **arguments)
    assert outcome.ok, outcome.message
    assert outcome.new_images == (outcome.output["image"],)
    made = store.get(outcome.output["image"])
    assert (outcome.output["width"], outcome.output["height"]) == (made.shape[1], made.shape[0])
    assert store.info(outcome.output["image"]).source == name
    return made


def test_image_tools_are_listed_in_a_stable_order_and_join_the_calculator() -> None:
    names = [t.name for t in IMAGE_TOOLS]
    assert names == [
        "crop", "resize", "rotate", "flip", "grayscale", "threshold",
        "enhance_contrast", "draw_box", "add_text",
    ]  # fmt: skip
    assert Toolbox(default_tools()).names == ["calculator", *names, "ocr", "detect", "count", "search"]


def test_the_context_is_injected_not_shown_to_the_model() -> None:
    for image_tool in IMAGE_TOOLS:
        properties = image_tool.parameters_schema()["properties"]
        assert "ctx" not in properties and "image" in properties


def test_crop_returns_the_exact_sub_array() -> None:
    images = ImageStore()
    source = images.add(_pattern())
    result = crop(source, [10, 5, 30, 45], ToolContext(images=images))  # FunctionTool is callable
    assert result == {"image": "img_1", "width": 20, "height": 40, "box": [10, 5, 30, 45]}
    np.testing.assert_array_equal(images.get("img_1"), _pattern()[5:45, 10:30])


def test_crop_clips_a_box_that_is_partly_outside(store: ImageStore) -> None:
    made = _output(store, "crop", image="img_0", box=[-10, 50, 20, 500])
    np.testing.assert_array_equal(made, _pattern()[50:60, 0:20])
    assert _call(store, "crop", image="img_0", box=[70, 0, 90, 10]).output["box"] == [70, 0, 80, 10]


@pytest.mark.parametrize("box", [[100, 100, 130, 140], [-50, 0, -10, 30], [0, 60, 10, 70]])
def test_crop_outside_the_image_is_grounding_drift(store: ImageStore, box: list[int]) -> None:
    outcome = _call(store, "crop", image="img_0", box=box)
    assert outcome.error_type is ErrorType.GROUNDING_DRIFT
    assert f"box {box} lies outside image img_0, which is 80x60 pixels" in outcome.message
    assert len(store) == 1


@pytest.mark.parametrize("box", [[30, 10, 20, 40], [10, 10, 10, 40], [10, 40, 30, 10]])
def test_a_box_with_its_corners_swapped_or_empty_is_arg_invalid(store: ImageStore, box: list[int]) -> None:
    outcome = _call(store, "crop", image="img_0", box=box)
    assert outcome.error_type is ErrorType.ARG_INVALID
    assert "x1 < x2 and y1 < y2" in outcome.message


@pytest.mark.parametrize("box", [[1, 2, 3], [1, 2, 3, 4, 5], [1.5, 2, 3, 4], "0,0,10,10"])
def test_a_malformed_box_fails_validation_before_the_tool_runs(store: ImageStore, box: Any) -> None:
    outcome = _call(store, "crop", image="img_0", box=box)
    assert outcome.error_type is ErrorType.ARG_INVALID
    assert outcome.message.startswith("invalid arguments for crop: box")
    assert outcome.attempts == 0


def test_an_unknown_image_id_is_arg_invalid_naming_the_ids_there_are(store: ImageStore) -> None:
    outcome = _call(store, "rotate", image="img_7", angle=90)
    assert outcome.error_type is ErrorType.ARG_INVALID
    assert outcome.message == "no image with id 'img_7'; available image ids: img_0"


@pytest.mark.parametrize(("angle", "turns"), [(90, 1), (180, 2), (270, 3), (-90, 3), (450, 1), (0, 0)])
def test_rotating_by_right_angles_is_exact(store: ImageStore, angle: float, turns: int) -> None:
    made = _output(store, "rotate", image="img_0", angle=angle)
    np.testing.assert_array_equal(made, np.rot90(_pattern(), turns))  # np.rot90 turns counter-clockwise


def test_rotating_90_degrees_counter_clockwise_moves_the_top_right_corner_to_the_bottom_left() -> None:
    images = ImageStore()
    marked = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    marked[0, WIDTH - 1] = (255, 0, 0)  # top-right
    result = rotate(images.add(marked), 90, ToolContext(images=images))
    assert (result["width"], result["height"]) == (HEIGHT, WIDTH)
    made = images.get(result["image"])
    assert made.shape == (WIDTH, HEIGHT, 3)
    assert tuple(made[0, 0]) == (255, 0, 0)  # counter-clockwise: the top-right corner goes to the top-left
    assert np.count_nonzero(made.any(axis=2)) == 1


def test_rotating_by_other_angles_grows_the_canvas_and_pads_white() -> None:
    images = ImageStore()
    black = images.add(np.zeros((100, 100, 3), np.uint8))
    made = images.get(rotate(black, 45, ToolContext(images=images))["image"])
    assert made.shape == (142, 142, 3)  # ceil(100 * sqrt(2))
    assert (made[0, 0] == 255).all() and (made[-1, -1] == 255).all()  # corners are new canvas
    assert (made[71, 71] == 0).all()  # the middle is still the (black) picture


def test_rotate_refuses_a_non_finite_angle(store: ImageStore) -> None:
    outcome = _call(store, "rotate", image="img_0", angle=float("inf"))
    assert outcome.error_type is ErrorType.ARG_INVALID and "finite" in outcome.message


def test_flip_is_exact(store: ImageStore) -> None:
    np.testing.assert_array_equal(
        _output(store, "flip", image="img_0", direction="horizontal"), _pattern()[:, ::-1]
    )
    np.testing.assert_array_equal(
        _output(store, "flip", image="img_0", direction="vertical"), _pattern()[::-1]
    )
    assert _call(store, "flip", image="img_0", direction="diagonal").error_type is ErrorType.ARG_INVALID


def test_resize_scales_both_sides(store: ImageStore) -> None:
    assert _output(store, "resize", image="img_0").shape == (2 * HEIGHT, 2 * WIDTH, 3)  # default 2x
    assert _output(store, "resize", image="img_0", scale=0.5).shape == (HEIGHT // 2, WIDTH // 2, 3)
    assert _output(store, "resize", image="img_0", scale=0.001).shape == (1, 1, 3)  # never empty


@pytest.mark.parametrize("scale", [0, -1, 8.5])
def test_resize_scale_must_be_in_range(store: ImageStore, scale: float) -> None:
    assert _call(store, "resize", image="img_0", scale=scale).error_type is ErrorType.ARG_INVALID


def test_resize_refuses_outputs_over_16_megapixels() -> None:
    images = ImageStore()
    large = images.add(np.zeros((2100, 2100, 3), np.uint8))
    outcome = asyncio.run(TOOLBOX.call("resize", {"image": large, "scale": 2}, ToolContext(images=images)))
    assert outcome.error_type is ErrorType.ARG_INVALID
    assert "gives 4200x4200, over the 16 MP limit" in outcome.message
    assert len(images) == 1


def test_grayscale_has_three_equal_channels(store: ImageStore) -> None:
    made = grayscale("img_0", ToolContext(images=store))
    gray = store.get(made["image"])
    assert gray.shape == (HEIGHT, WIDTH, 3)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()


def _two_tone() -> np.ndarray:
    """Dark left half (gray 40-60), light right half (gray 190-210): an easy image for Otsu."""
    rng = np.random.default_rng(0)
    image = np.empty((50, 100), np.uint8)
    image[:, :50] = rng.integers(40, 61, (50, 50))
    image[:, 50:] = rng.integers(190, 211, (50, 50))
    return np.repeat(image[:, :, None], 3, axis=2)


def test_threshold_without_a_value_uses_otsu_and_gives_pure_black_and_white() -> None:
    images = ImageStore()
    result = threshold(images.add(_two_tone()), ToolContext(images=images))
    assert 60 <= result["threshold"] < 190
    made = images.get(result["image"])
    assert set(np.unique(made)) == {0, 255}
    assert (made[:, :50] == 0).all() and (made[:, 50:] == 255).all()


def test_threshold_with_a_value_whitens_pixels_above_it(store: ImageStore) -> None:
    made = _output(store, "threshold", image="img_0", value=100)
    gray = store.get(_call(store, "grayscale", image="img_0").output["image"])[..., 0]
    np.testing.assert_array_equal(made[..., 0], np.where(gray > 100, 255, 0))
    assert _call(store, "threshold", image="img_0", value=300).error_type is ErrorType.ARG_INVALID


def test_enhance_contrast_spreads_a_dull_image() -> None:
    images = ImageStore()
    rng = np.random.default_rng(1)
    dull = images.add(np.repeat(rng.integers(110, 131, (64, 64, 1), dtype=np.uint8), 3, axis=2))
    arguments = {"image": dull, "clip_limit": 4}
    outcome = asyncio.run(TOOLBOX.call("enhance_contrast", arguments, ToolContext(images=images)))
    made = images.get(outcome.output["image"])
    assert made.shape == (64, 64, 3)
    assert made.astype(float).std() > 1.5 * images.get(dull).astype(float).std()


def test_draw_box_changes_only_the_border_of_the_box() -> None:
    images = ImageStore()
    gray = images.add(np.full((100, 100, 3), 128, np.uint8))
    made = images.get(draw_box(gray, [20, 30, 60, 70], ToolContext(images=images))["image"])
    changed = (made != 128).any(axis=2)
    border = np.zeros((100, 100), bool)
    border[30, 20:60] = border[69, 20:60] = True  # top and bottom rows; x2 and y2 are exclusive
    border[30:70, 20] = border[30:70, 59] = True  # left and right columns
    np.testing.assert_array_equal(changed, border)
    assert (made[border] == (255, 0, 0)).all()  # red by default


def test_draw_box_writes_its_label_above_the_box(store: ImageStore) -> None:
    plain = _output(store, "draw_box", image="img_0", box=[10, 30, 50, 55], color="yellow")
    labelled = _output(store, "draw_box", image="img_0", box=[10, 30, 50, 55], color="yellow", label="cat")
    differs = (plain != labelled).any(axis=2)
    assert differs.any() and not differs[31:54, 11:49].any()  # the label sits outside the box
    assert _call(store, "draw_box", image="img_0", box=[90, 0, 99, 9]).error_type is ErrorType.GROUNDING_DRIFT


def test_add_text_draws_near_its_position(store: ImageStore) -> None:
    made = _output(store, "add_text", image="img_0", text="Hi 42", position=[5, 40], color="white")
    rows, cols = np.nonzero((made != _pattern()).any(axis=2))
    assert rows.size > 0
    assert rows.max() <= 45 and cols.min() >= 3  # bottom-left anchored at (5, 40)


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"text": "x", "position": [200, 10]}, ErrorType.GROUNDING_DRIFT),
        ({"text": "x", "position": [10]}, ErrorType.ARG_INVALID),
        ({"text": "", "position": [10, 10]}, ErrorType.ARG_INVALID),
        ({"text": "x", "position": [10, 10], "color": "purple"}, ErrorType.ARG_INVALID),
    ],
)
def test_add_text_rejects_bad_arguments(
    store: ImageStore, arguments: dict[str, Any], error: ErrorType
) -> None:
    assert _call(store, "add_text", image="img_0", **arguments).error_type is error


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("crop", {"box": [0, 0, 10, 10]}),
        ("resize", {"scale": 1.5}),
        ("rotate", {"angle": 33}),
        ("flip", {"direction": "horizontal"}),
        ("grayscale", {}),
        ("threshold", {}),
        ("enhance_contrast", {}),
        ("draw_box", {"box": [5, 5, 40, 40], "label": "x"}),
        ("add_text", {"text": "x", "position": [5, 20]}),
    ],
)
def test_every_tool_adds_a_new_image_and_leaves_the_source_untouched(
    store: ImageStore, name: str, arguments: dict[str, Any]
) -> None:
    made = _output(store, name, image="img_0", **arguments)
    assert made.dtype == np.uint8 and made.ndim == 3 and made.shape[2] == 3
    assert len(store) == 2
    source = store.get("img_0")
    np.testing.assert_array_equal(source, _pattern())
    assert not source.flags.writeable
