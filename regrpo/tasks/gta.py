"""Load the GTA benchmark's ``dataset.json`` (users download GTA themselves) as regrpo tasks.

GTA ("GTA: A Benchmark for General Tool Agents", open-compass/GTA; ``shared/REFERENCES.md`` §1) is
a dict keyed ``"0"``..``"228"``; each query has ``tools``, ``files`` (images, relative to the
dataset directory), ``dialogs`` (the user query, then the ground-truth tool calls and returns) and
``gt_answer``. :func:`load_gta` turns each query into a :class:`GtaTask`, which offers the same
fields as :class:`~regrpo.tasks.schema.Task` (``id``, ``category``, ``difficulty``, ``question``,
``images``, ``reference``, ``check``), so ``regrpo eval`` can run either.

Mapping GTA's tools onto ours (``GTA_TOOL_MAP``): OCR→ocr, Calculator→calculator,
GoogleSearch→search, CountGivenObject→count, TextToBbox→detect, DrawBox→draw_box,
AddText→add_text. Arguments are renamed and parsed: a bbox string ``"(x1, y1, x2, y2)"`` becomes a
``[x1, y1, x2, y2]`` list, ``annotation`` becomes ``label``, TextToBbox's ``text`` becomes
``label`` (``top1`` is dropped: detect returns every box), an image path becomes the id the
episode's ``ImageStore`` gives it (the query's files are ``img_0``, ``img_1``, ... in order; an
image a ground-truth tool returned takes the next id). A tool we lack (ImageDescription, MathOCR,
Solver, Plot, TextToImage, ...) is listed in ``unmapped_tools`` and its calls are left out of the
reference; such a task still loads, but its reference is incomplete (``reference_complete``).

Scoring (:meth:`GtaTask.check`) follows GTA's ``GTABenchEvaluator`` for objective queries: every
whitelist group needs one alias matching ``\\b(alias)\\b`` (case-insensitive) and no blacklist
alias may match. We ``re.escape`` the alias, where GTA inserts it raw: the two differ only for
aliases holding regex metacharacters ("$3.5"), where GTA's regex means something else. Subjective
queries (scored by embedding similarity in GTA) and image-generation queries cannot be scored by
string match: ``check`` raises for them; ``load_gta(objective_only=True)`` skips them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from regrpo.errors import InputError
from regrpo.tasks.schema import ReferenceStep

__all__ = ["GTA_TOOL_MAP", "GtaAnswer", "GtaFormatError", "GtaTask", "load_gta", "parse_gta_box"]

GTA_TOOL_MAP: dict[str, str] = {
    "OCR": "ocr",
    "Calculator": "calculator",
    "GoogleSearch": "search",
    "CountGivenObject": "count",
    "TextToBbox": "detect",
    "DrawBox": "draw_box",
    "AddText": "add_text",
}
"""GTA tool name → regrpo tool name."""

_POSITIONS = {"l": 0.05, "m": 0.5, "r": 0.95, "t": 0.1, "b": 0.95}
_OUR_COLOURS = {"red", "green", "blue", "yellow", "black", "white"}


class GtaFormatError(InputError):
    """A GTA ``dataset.json`` is missing or malformed; the message names the query and field."""


@dataclass(frozen=True)
class GtaAnswer:
    """A GTA ``gt_answer``: objective (whitelist/blacklist), subjective references, or none."""

    kind: Literal["objective", "subjective", "image_generation"]
    whitelist: list[list[str]] = field(default_factory=list)
    """Alias groups: every group must match, by any one of its aliases."""
    blacklist: list[list[str]] = field(default_factory=list)
    """Alias groups none of whose aliases may match."""
    references: list[str] = field(default_factory=list)
    """Reference answers of a subjective query."""


def _alias_matches(alias: str, answer: str) -> bool:
    return re.search(rf"\b({re.escape(alias)})\b", answer, flags=re.IGNORECASE) is not None


@dataclass(frozen=True)
class GtaTask:
    """One GTA query, shaped like :class:`~regrpo.tasks.schema.Task`."""

    id: str
    question: str
    images: list[str]
    """Absolute image paths (the query's ``files`` resolved against the dataset directory)."""
    answer: GtaAnswer
    reference: list[ReferenceStep]
    """The ground-truth calls of mapped tools, arguments in regrpo's form."""
    tools: list[str]
    """The regrpo tools the query needs (mapped names, in GTA's order)."""
    unmapped_tools: list[str]
    """GTA tools listed or called that regrpo lacks."""
    category: str = "gta"
    difficulty: int = 1
    """1-3 from the number of ground-truth tool calls (1-2 → 1, 3 → 2, 4+ → 3)."""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def reference_complete(self) -> bool:
        """Whether every ground-truth call mapped onto a regrpo tool."""
        return not self.unmapped_tools

    def check(self, answer: str | None) -> bool:
        """GTA's objective scoring: all whitelist groups match, no blacklist alias does.

        Raises :class:`GtaFormatError` for subjective and image-generation queries, which GTA scores
        by embedding similarity or by the tool calls, not by the answer text.
        """
        if self.answer.kind != "objective":
            raise GtaFormatError(
                f"GTA query {self.id} is {self.answer.kind}: it cannot be scored by string match; "
                "load with objective_only=True to skip such queries"
            )
        if answer is None:
            return False
        if not all(any(_alias_matches(a, answer) for a in group) for group in self.answer.whitelist):
            return False
        return not any(_alias_matches(a, answer) for group in self.answer.blacklist for a in group)


def parse_gta_box(text: Any) -> list[int]:
    """GTA's bbox string ``"(x1, y1, x2, y2)"`` (or a list) as ``[x1, y1, x2, y2]`` integer pixels."""
    values = re.findall(r"-?\d+(?:\.\d+)?", text) if isinstance(text, str) else text
    if not isinstance(values, (list, tuple)) or len(values) != 4:
        raise ValueError(f"a bbox must be '(x1, y1, x2, y2)', got {text!r}")
    return [round(float(v)) for v in values]


def _position(text: Any, size: tuple[int, int] | None) -> list[int]:
    """AddText's position: ``"(x, y)"``, or two letters (l/m/r then t/m/b) needing the image size."""
    if isinstance(text, str) and re.fullmatch(r"\s*[lmr][tmb]\s*", text):
        if size is None:
            raise ValueError(f"position {text!r} needs the image size, which is unknown")
        horizontal, vertical = text.strip()[0], text.strip()[1]
        return [round(_POSITIONS[horizontal] * size[0]), round(_POSITIONS[vertical] * size[1])]
    values = re.findall(r"-?\d+(?:\.\d+)?", text) if isinstance(text, str) else text
    if not isinstance(values, (list, tuple)) or len(values) != 2:
        raise ValueError(f"a position must be '(x, y)' or like 'mt', got {text!r}")
    return [round(float(v)) for v in values]


class _ImageIds:
    """Dataset-relative image paths → ``ImageStore`` ids, in the order the episode would add them."""

    def __init__(self, files: list[str], sizes: dict[str, tuple[int, int]]) -> None:
        self.ids = {path: f"img_{i}" for i, path in enumerate(files)}
        self.sizes = sizes

    def of(self, value: Any) -> str:
        if not isinstance(value, str) or value not in self.ids:
            raise ValueError(f"image {value!r} is not one of the query's files or earlier tool outputs")
        return self.ids[value]

    def produced(self, path: str, made_from: Any) -> None:
        """Register a tool's output image; DrawBox/AddText outputs keep their input's size."""
        self.ids.setdefault(path, f"img_{len(self.ids)}")
        if isinstance(made_from, str) and made_from in self.sizes:
            self.sizes.setdefault(path, self.sizes[made_from])


def _map_arguments(tool: str, args: Mapping[str, Any], images: _ImageIds) -> dict[str, Any]:
    """GTA ``tool``'s arguments in the form of the regrpo tool it maps to."""
    if tool == "Calculator":
        return {"expression": args["expression"]}
    if tool == "GoogleSearch":
        return {"query": args["query"], **({"k": min(int(args["k"]), 10)} if "k" in args else {})}
    image = images.of(args["image"])
    if tool == "OCR":
        return {"image": image}
    if tool == "CountGivenObject":
        return {"image": image, "text": args["text"]}
    if tool == "TextToBbox":
        return {"image": image, "label": args["text"]}
    if tool == "DrawBox":
        mapped: dict[str, Any] = {"image": image, "box": parse_gta_box(args["bbox"])}
        if args.get("annotation"):
            mapped["label"] = args["annotation"]
        return mapped
    # AddText
    mapped = {
        "image": image,
        "text": args["text"],
        "position": _position(args["position"], images.sizes.get(args["image"])),
    }
    if str(args.get("color", "red")).lower() in _OUR_COLOURS:
        mapped["color"] = str(args.get("color", "red")).lower()
    return mapped


def _answer(key: str, raw: Any) -> GtaAnswer:
    if raw is None:
        return GtaAnswer("image_generation")
    if isinstance(raw, list) and all(isinstance(r, str) for r in raw):
        return GtaAnswer("subjective", references=list(raw))
    if isinstance(raw, dict) and "whitelist" in raw:
        groups = []
        for name in ("whitelist", "blacklist"):
            value = raw.get(name) or []
            if not isinstance(value, list) or not all(
                isinstance(g, list) and g and all(isinstance(a, (str, int, float)) for a in g) for g in value
            ):
                raise GtaFormatError(
                    f"GTA query {key}: gt_answer.{name} must be a list of non-empty alias lists"
                )
            groups.append([[str(a) for a in g] for g in value])
        if not groups[0]:
            raise GtaFormatError(f"GTA query {key}: gt_answer.whitelist is empty")
        return GtaAnswer("objective", whitelist=groups[0], blacklist=groups[1])
    raise GtaFormatError(f"GTA query {key}: gt_answer must be null, a list of strings or a whitelist dict")


def _reference(key: str, dialogs: list[Any], images: _ImageIds) -> tuple[list[ReferenceStep], list[str], int]:
    steps, unmapped, calls = [], [], 0
    last_input: Any = None  # the image argument of the latest call, for sizing its output image
    for turn in dialogs:
        if not isinstance(turn, dict):
            raise GtaFormatError(f"GTA query {key}: every dialogs entry must be an object")
        if turn.get("role") == "tool":
            content = turn.get("content")
            if isinstance(content, dict) and content.get("type") == "image":
                images.produced(str(content.get("content")), last_input)
            continue
        for call in turn.get("tool_calls") or []:
            function = call.get("function", {}) if isinstance(call, dict) else {}
            name, args = function.get("name"), function.get("arguments", {})
            if not isinstance(name, str) or not isinstance(args, dict):
                raise GtaFormatError(
                    f"GTA query {key}: a tool call needs function.name and function.arguments"
                )
            calls += 1
            last_input = args.get("image")
            if name not in GTA_TOOL_MAP:
                unmapped.append(name)
                continue
            try:
                steps.append(ReferenceStep(GTA_TOOL_MAP[name], _map_arguments(name, args, images)))
            except (KeyError, ValueError, TypeError) as exc:
                raise GtaFormatError(
                    f"GTA query {key}: cannot map the {name} call's arguments {args}: {exc}"
                ) from exc
    return steps, unmapped, calls


def _image_sizes(root: Path, files: list[str]) -> dict[str, tuple[int, int]]:
    from PIL import Image

    sizes = {}
    for path in files:
        try:
            with Image.open(root / path) as image:
                sizes[path] = image.size
        except OSError:
            pass  # a missing image is reported by load_gta when require_images is set
    return sizes


def _task(key: str, item: Any, root: Path, require_images: bool) -> GtaTask:
    if not isinstance(item, dict):
        raise GtaFormatError(f"GTA query {key}: must be an object with tools, files, dialogs, gt_answer")
    for name in ("files", "dialogs", "gt_answer"):
        if name not in item:
            raise GtaFormatError(f"GTA query {key}: field {name!r} is missing")
    dialogs, files = item["dialogs"], item["files"]
    if not isinstance(dialogs, list) or not dialogs or not isinstance(dialogs[0], dict):
        raise GtaFormatError(
            f"GTA query {key}: dialogs must be a non-empty list starting with the user query"
        )
    question = dialogs[0].get("content")
    if dialogs[0].get("role") != "user" or not isinstance(question, str):
        raise GtaFormatError(f"GTA query {key}: the first dialog turn must be the user's query text")
    if not isinstance(files, list) or not all(
        isinstance(f, dict) and isinstance(f.get("path"), str) for f in files
    ):
        raise GtaFormatError(f"GTA query {key}: files must be a list of objects with a path")
    paths = [f["path"] for f in files if f.get("type", "image") == "image"]
    missing = [p for p in paths if not (root / p).is_file()]
    if require_images and missing:
        raise GtaFormatError(f"GTA query {key}: image file(s) missing under {root}: {missing}")
    images = _ImageIds(paths, _image_sizes(root, paths))
    steps, unmapped_calls, calls = _reference(key, dialogs, images)
    listed = [t.get("name") if isinstance(t, dict) else t for t in item.get("tools") or []]
    tools = [GTA_TOOL_MAP[t] for t in listed if t in GTA_TOOL_MAP]
    unmapped = sorted({str(t) for t in listed if t not in GTA_TOOL_MAP} | set(unmapped_calls))
    return GtaTask(
        id=f"gta-{key}", question=question, images=[str((root / p).resolve()) for p in paths],
        answer=_answer(key, item["gt_answer"]), reference=steps, tools=tools, unmapped_tools=unmapped,
        difficulty=1 if calls <= 2 else 2 if calls == 3 else 3, meta={"gta_key": key, "gta_tools": listed},
    )  # fmt: skip


def load_gta(path: str | Path, *, objective_only: bool = False, require_images: bool = True) -> list[GtaTask]:
    """Load GTA queries from ``dataset.json`` (or a directory holding it), in key order.

    Args:
        path: The file, or the dataset directory (``gta_dataset/``) that holds ``dataset.json``.
        objective_only: Keep only queries with a whitelist answer (those :meth:`GtaTask.check` scores).
        require_images: Raise if an image a query names is not on disk.

    Raises :class:`GtaFormatError` naming the query and field that is wrong.
    """
    file = Path(path).expanduser()
    if file.is_dir():
        file = file / "dataset.json"
    if not file.is_file():
        raise GtaFormatError(
            f"GTA dataset file not found: {file}; download GTA's dataset (dataset.json and image/) first"
        )
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GtaFormatError(f"{file} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise GtaFormatError(f"{file} must be a non-empty JSON object keyed by query number ('0', '1', ...)")
    root = file.parent.resolve()
    keys = sorted(data, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))
    tasks = [_task(key, data[key], root, require_images) for key in keys]
    return [t for t in tasks if t.answer.kind == "objective"] if objective_only else tasks
