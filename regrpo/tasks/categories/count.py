"""``count``: count shapes by kind and colour in a synthetic scene (count, or count + calculator).

Scenes come from :func:`regrpo.tasks.scenes.render_scene`, the distribution the shipped detector
was trained on. Questions ask for a colour and a kind ("red circles"), a kind, or a colour; at
difficulty 3 some ask for the sum of two kinds, which needs two counts and a calculator. About one
question in ten asks for something absent (answer 0), so "at least one" is never a safe guess.
The answer is the scene's ground truth, not the detector's output.

Held-out tasks (``variant="holdout"``) are portrait scenes (360 x 480 px; training: landscape
480 x 360) holding a few more shapes, and use question phrasings no training task uses. Shape kinds
and colours stay those the shipped detector knows.
"""

from __future__ import annotations

import numpy as np

from regrpo.tasks.draft import Draft, Variant, calculated, choice
from regrpo.tasks.scenes import COLOURS, SHAPE_KINDS, SceneObject, render_scene
from regrpo.tasks.schema import AnswerSpec, ReferenceStep

__all__ = ["generate"]

_PLURALS = {"cross": "crosses"}
_QUESTIONS: dict[Variant, tuple[str, ...]] = {
    "train": (
        "How many {what} are in the picture?",
        "Count the {what} in this image.",
        "How many {what} can you see?",
        "What is the number of {what} in the image?",
    ),
    "holdout": (
        "Tell me how many {what} this scene contains.",
        "In this photo, what is the count of {what}?",
        "How many {what} appear here?",
    ),
}
_CANVAS: dict[Variant, tuple[int, int]] = {"train": (480, 360), "holdout": (360, 480)}
"""Scene ``(width, height)`` in pixels per variant: held-out scenes are portrait."""
_N_OBJECTS: dict[Variant, tuple[tuple[int, int], ...]] = {
    "train": ((3, 6), (5, 9), (7, 12)),
    "holdout": ((4, 8), (6, 11), (8, 13)),
}
"""How many shapes a scene tries to place, by difficulty."""


def _plural(kind: str) -> str:
    return _PLURALS.get(kind, kind + "s")


def _matches(obj: SceneObject, colour: str | None, kind: str | None) -> bool:
    return (colour is None or obj.color == colour) and (kind is None or obj.kind == kind)


def generate(rng: np.random.Generator, difficulty: int, variant: Variant = "train") -> Draft:
    """A scene and a question about how many shapes of some kind and/or colour it holds."""
    width, height = _CANVAS[variant]
    scene = render_scene(rng, width=width, height=height, n_objects=_N_OBJECTS[variant][difficulty - 1])
    objects = scene.objects
    template = choice(
        rng, ("colour+kind", "colour+kind", "kind", "colour") + (("sum",) if difficulty == 3 else ())
    )
    if template == "sum":
        first, second = (str(k) for k in rng.choice(SHAPE_KINDS, size=2, replace=False))
        n1 = sum(_matches(o, None, first) for o in objects)
        n2 = sum(_matches(o, None, second) for o in objects)
        what = f"{_plural(first)} and {_plural(second)} together"
        expression = f"{n1} + {n2}"
        value, shown = calculated(expression)
        reference = [
            ReferenceStep("count", {"image": "img_0", "text": first}, [str(n1)]),
            ReferenceStep("count", {"image": "img_0", "text": second}, [str(n2)]),
            ReferenceStep("calculator", {"expression": expression}, [shown]),
        ]
    else:
        target = choice(rng, objects)
        colour: str | None = target.color if "colour" in template else None
        kind: str | None = target.kind if "kind" in template else None
        if rng.random() < 0.1:  # ask for something absent
            absent = [c for c in COLOURS if not any(_matches(o, c, kind) for o in objects)]
            colour = choice(rng, absent) if absent else colour
        value = float(sum(_matches(o, colour, kind) for o in objects))
        phrase = " ".join(w for w in (colour, kind) if w)
        if kind is None:
            what = f"{colour} shapes"
        else:
            what = _plural(kind) if colour is None else f"{colour} {_plural(kind)}"
        reference = [ReferenceStep("count", {"image": "img_0", "text": phrase}, [str(int(value))])]
    phrasing = choice(rng, _QUESTIONS[variant])
    question = phrasing.format(what=what)
    objects_meta = [{"kind": o.kind, "color": o.color, "box": list(o.box)} for o in objects]
    meta = {"template": template, "phrasing": phrasing, "canvas": [width, height], "objects": objects_meta}
    return Draft(question, [scene.image], AnswerSpec("number", value), reference, meta)
