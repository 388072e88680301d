"""``count``: count shapes by kind and colour in a synthetic scene (count, or count + calculator).

Scenes come from :func:`regrpo.tasks.scenes.render_scene`, the distribution the shipped detector
was trained on. Questions ask for a colour and a kind ("red circles"), a kind, or a colour; at
difficulty 3 some ask for the sum of two kinds, which needs two counts and a calculator. About one
question in ten asks for something absent (answer 0), so "at least one" is never a safe guess.
The answer is the scene's ground truth, not the detector's output.
"""

from __future__ import annotations

import numpy as np

from regrpo.tasks.draft import Draft, calculated, choice
from regrpo.tasks.scenes import COLOURS, SHAPE_KINDS, SceneObject, render_scene
from regrpo.tasks.schema import AnswerSpec, ReferenceStep

__all__ = ["generate"]

_PLURALS = {"cross": "crosses"}
_QUESTIONS = (
    "How many {what} are in the picture?",
    "Count the {what} in this image.",
    "How many {what} can you see?",
    "What is the number of {what} in the image?",
)


def _plural(kind: str) -> str:
    return _PLURALS.get(kind, kind + "s")


def _matches(obj: SceneObject, colour: str | None, kind: str | None) -> bool:
    return (colour is None or obj.color == colour) and (kind is None or obj.kind == kind)


def generate(rng: np.random.Generator, difficulty: int) -> Draft:
    """A scene and a question about how many shapes of some kind and/or colour it holds."""
    n_objects = ((3, 6), (5, 9), (7, 12))[difficulty - 1]
    scene = render_scene(rng, n_objects=n_objects)
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
    question = choice(rng, _QUESTIONS).format(what=what)
    objects_meta = [{"kind": o.kind, "color": o.color, "box": list(o.box)} for o in objects]
    meta = {"template": template, "objects": objects_meta}
    return Draft(question, [scene.image], AnswerSpec("number", value), reference, meta)
