"""``detect`` and ``count``: find objects with an ultralytics YOLO checkpoint and name their colours.

The default checkpoint ``regrpo/data/detector/shapes-yolo.pt`` is ours: a small YOLO trained by
``scripts/train_detector.py`` on :func:`regrpo.tasks.scenes.render_scene` images (its classes are
``SHAPE_KINDS``; see ``PROVENANCE.md`` beside it). Any other YOLO detection checkpoint *file* works
(``Detector("yolo11n.pt")`` once the user has it on disk); we check the file exists and never hand
ultralytics a bare name it would try to download.

Colour is not a detector class: it is named from the box's pixels (:func:`name_colour`, HSV), so
"red circle" works with any checkpoint. A query such as ``"red circles"`` splits into a colour
(known colour words) and a label (the rest, singularised); generic nouns ("objects", "shapes")
match every label. Asking for a label the checkpoint does not know is ``ToolMismatch`` (the detector
cannot do that step), not zero.

NMS is class-agnostic: each place holds one object, and two classes fighting over one box would
count it twice. One model per :class:`Detector`, loaded lazily; predictions are serialised by a lock
because an ultralytics predictor is not thread-safe.
"""

from __future__ import annotations

import functools
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from regrpo.errors import ErrorType, InputError
from regrpo.tools.base import FunctionTool, ToolContext, tool
from regrpo.tools.errors import ToolError
from regrpo.tools.ultralytics_offline import import_ultralytics

__all__ = [
    "DEFAULT_CHECKPOINT",
    "Detection",
    "Detector",
    "LabelQuery",
    "make_detection_tools",
    "name_colour",
    "parse_label_query",
    "shared_detector",
]

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "data" / "detector" / "shapes-yolo.pt"
"""Our shapes detector, shipped as package data (see ``PROVENANCE.md`` beside it)."""

_HUE_NAMES: tuple[tuple[str, float], ...] = (
    ("red", 0.0), ("orange", 30.0), ("yellow", 55.0), ("green", 125.0),
    ("cyan", 185.0), ("blue", 225.0), ("purple", 275.0), ("pink", 325.0),
)  # fmt: skip
"""Reference hue (degrees) of each chromatic colour name; a box gets the nearest one."""
_ACHROMATIC = ("black", "gray", "white")
_SYNONYMS = {"grey": "gray", "violet": "purple", "magenta": "pink"}
COLOUR_WORDS: frozenset[str] = frozenset([n for n, _ in _HUE_NAMES] + list(_ACHROMATIC) + list(_SYNONYMS))
_GENERIC_NOUNS = frozenset({"object", "shape", "thing", "item", "one"})
_FILLER = frozenset(
    {
        "a",
        "an",
        "the",
        "all",
        "any",
        "of",
        "in",
        "on",
        "image",
        "picture",
        "coloured",
        "colored",
        "how",
        "many",
        "there",
        "are",
        "is",
    }
)


@dataclass(frozen=True)
class Detection:
    """One detected object: its class label, colour name, box ``(x1, y1, x2, y2)`` and confidence."""

    label: str
    color: str
    box: tuple[int, int, int, int]
    score: float

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "color": self.color,
            "box": list(self.box),
            "score": round(self.score, 4),
        }


def name_colour(pixels: np.ndarray) -> str:
    """Name the dominant colour of RGB ``uint8`` pixels ``(H, W, 3)``.

    Saturated, not-too-dark pixels (S > 0.35, V > 0.2) vote: when they are under 8 % of the box the
    object is achromatic (black, gray or white by median brightness); otherwise the hue histogram's
    peak (2° bins, smoothed over 10°) is refined by the circular mean of the pixels near it and named
    by the nearest reference hue. The peak, not the mean, so a lightly overlapping neighbour or
    anti-aliased edges do not pull the answer.
    """
    hsv = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2HSV).reshape(-1, 3).astype(np.float64)
    if len(hsv) == 0:
        return "gray"
    chromatic = (hsv[:, 1] > 0.35 * 255) & (hsv[:, 2] > 0.2 * 255)
    if chromatic.mean() < 0.08:
        value = float(np.median(hsv[:, 2]))
        return "black" if value < 70 else "white" if value > 190 else "gray"
    hues = hsv[chromatic, 0] * 2.0  # OpenCV stores hue / 2
    histogram = np.bincount((hues / 2).astype(int) % 180, minlength=180).astype(np.float64)
    smoothed = sum(np.roll(histogram, shift) for shift in range(-2, 3))
    peak = float(np.argmax(smoothed)) * 2.0
    near = hues[np.abs((hues - peak + 180) % 360 - 180) <= 20]
    radians = np.deg2rad(near)
    hue = float(np.rad2deg(np.arctan2(np.sin(radians).mean(), np.cos(radians).mean()))) % 360
    return min(_HUE_NAMES, key=lambda item: abs((hue - item[1] + 180) % 360 - 180))[0]


def _singular(word: str) -> str:
    if len(word) > 3 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if len(word) > 2 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


@dataclass(frozen=True)
class LabelQuery:
    """A parsed ``label``/``text`` argument: an optional colour and an optional (singular) label."""

    color: str | None
    label: str | None

    def matches(self, detection: Detection) -> bool:
        colour_ok = self.color is None or detection.color == self.color
        label_ok = self.label is None or _normalise_label(detection.label) == self.label
        return colour_ok and label_ok


def _normalise_label(label: str) -> str:
    words = re.findall(r"[a-z0-9]+", label.lower())
    return " ".join(words[:-1] + [_singular(words[-1])]) if words else ""


def parse_label_query(text: str | None) -> LabelQuery:
    """Split ``"red circles"`` into colour ``red`` and label ``circle``; generic nouns mean any label."""
    words = re.findall(r"[a-z0-9]+", (text or "").lower())
    colours = [_SYNONYMS.get(w, w) for w in words if w in COLOUR_WORDS]
    rest = [w for w in words if w not in COLOUR_WORDS and w not in _FILLER]
    label = _normalise_label(" ".join(rest)) if rest else None
    if label is not None and label in _GENERIC_NOUNS:
        label = None
    return LabelQuery(color=colours[0] if colours else None, label=label)


class Detector:
    """A YOLO detection checkpoint, loaded on first use.

    Args:
        checkpoint: Path of a ``.pt`` file; default :data:`DEFAULT_CHECKPOINT` (our shapes detector).
        conf: Lowest score a detection may have (0-1).
        device: ``"cpu"``, ``"cuda:0"``, ...; default CUDA when available, else CPU.
        imgsz: Inference size in pixels; default the size the checkpoint was trained at.
    """

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        conf: float = 0.25,
        device: str | None = None,
        imgsz: int | None = None,
    ) -> None:
        if not 0 <= conf <= 1:
            raise InputError(f"conf must be between 0 and 1, got {conf}")
        self.checkpoint = Path(checkpoint).expanduser() if checkpoint is not None else DEFAULT_CHECKPOINT
        if not self.checkpoint.is_file():
            raise InputError(
                f"detector checkpoint not found: {str(self.checkpoint)!r}; pass the path of a YOLO .pt file "
                "(ultralytics' named weights such as yolo11n.pt must be downloaded first)"
            )
        self.conf = conf
        self.device = device
        self.imgsz = imgsz
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        import_ultralytics()
        import torch
        from ultralytics import YOLO

        try:
            model = YOLO(str(self.checkpoint), task="detect")
        except Exception as exc:  # a corrupt or non-YOLO file
            raise InputError(f"cannot load detector checkpoint {str(self.checkpoint)!r}: {exc}") from exc
        if self.device is None:
            self.device = "cuda:0" if torch.cuda.is_available() else "cpu"
        return model

    @property
    def labels(self) -> list[str]:
        """The checkpoint's class names, in class-index order."""
        with self._lock:
            if self._model is None:
                self._model = self._load()
            names = self._model.names
        return [names[i] for i in sorted(names)]

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Objects in an RGB ``uint8`` ``(H, W, 3)`` image, highest score first."""
        with self._lock:
            if self._model is None:
                self._model = self._load()
            options: dict[str, Any] = {"conf": self.conf, "device": self.device, "agnostic_nms": True}
            if self.imgsz is not None:
                options["imgsz"] = self.imgsz
            # ultralytics reads numpy images as BGR (OpenCV's order), as its training loader does.
            result = self._model.predict(np.ascontiguousarray(image[:, :, ::-1]), verbose=False, **options)[0]
        boxes = result.boxes
        xyxy = boxes.xyxy.cpu().numpy()
        classes = boxes.cls.cpu().numpy().astype(int)
        scores = boxes.conf.cpu().numpy()
        height, width = image.shape[:2]
        detections = []
        for (x1, y1, x2, y2), cls, score in zip(xyxy, classes, scores, strict=True):
            box = (
                max(0, int(np.floor(x1))),
                max(0, int(np.floor(y1))),
                min(width, int(np.ceil(x2))),
                min(height, int(np.ceil(y2))),
            )
            if box[0] >= box[2] or box[1] >= box[3]:
                continue
            colour = name_colour(image[box[1] : box[3], box[0] : box[2]])
            detections.append(Detection(str(result.names[int(cls)]), colour, box, float(score)))
        return sorted(detections, key=lambda d: -d.score)

    def find(self, image: np.ndarray, text: str | None) -> list[Detection]:
        """Detections matching ``text`` (``"red circle"``); ToolMismatch for labels the model lacks."""
        query = parse_label_query(text)
        if query.label is not None:
            known = {_normalise_label(label) for label in self.labels}
            if query.label not in known:
                raise ToolError(
                    f"this detector does not know {query.label!r}; it finds: {', '.join(self.labels)}",
                    ErrorType.TOOL_MISMATCH,
                )
        return [d for d in self.detect(image) if query.matches(d)]


@functools.cache
def shared_detector() -> Detector:
    """The process's detector over :data:`DEFAULT_CHECKPOINT`, loaded on its first call."""
    return Detector()


def make_detection_tools(detector: Detector | None = None) -> list[FunctionTool]:
    """The ``detect`` and ``count`` tools over ``detector`` (default :func:`shared_detector`)."""

    def resolve() -> Detector:
        return detector or shared_detector()

    @tool(name="detect", timeout_s=60.0)  # the first call loads the checkpoint
    def detect(image: str, ctx: ToolContext, label: str | None = None) -> dict[str, Any]:
        """Find objects in an image: label, colour, box [x1, y1, x2, y2] and score of each.

        Args:
            image: Id of the image, like img_0.
            label: Optional filter such as "circle", "red circle" or "red".
        """
        found = resolve().find(ctx.images.get(image), label)
        return {"objects": [d.as_json() for d in found]}

    @tool(name="count", timeout_s=60.0)
    def count(image: str, text: str, ctx: ToolContext) -> dict[str, Any]:
        """Count the objects in an image that match text, such as "circle" or "red squares".

        Args:
            image: Id of the image, like img_0.
            text: What to count: a label, a colour, or both ("blue star").
        """
        return {"text": text, "count": len(resolve().find(ctx.images.get(image), text))}

    return [detect, count]


detect, count = make_detection_tools()
"""The ``detect`` and ``count`` tools over the shared default detector."""
