"""Milliseconds per call of each built-in tool on this machine, first call reported separately.

Each tool is called through ``Toolbox.call`` (validation, worker thread, JSON check included), as the
agent calls it. The first call of a tool is timed alone: for ``ocr``, ``detect`` and ``count`` it
includes loading the model (easyocr reader; YOLO checkpoint) and any lazy import. Then the median
of ``--repeats`` further calls. Inputs are fixed and offline: a 480x360 ``render_scene`` scene for
the image and detection tools, a 640x240 image with two lines of rendered text for ``ocr`` (and a
300x90 region of it), the shipped search corpus for ``search`` (a small in-memory corpus if it is
absent). Every outcome is checked to be ``ok``, so a broken tool cannot look fast. The title gives
the load average: on a shared 2-core machine other jobs slow the model-backed tools a lot.

Usage::

    .venv/bin/python benchmarks/tools.py                # about 2 minutes on a 2-core CPU
    .venv/bin/python benchmarks/tools.py --repeats 5    # quicker, noisier
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from rich.console import Console
from rich.table import Table

from regrpo.tasks.scenes import render_scene
from regrpo.tools import ImageStore, Toolbox, ToolContext, default_tools
from regrpo.tools.search import DEFAULT_CORPUS, BM25Provider, make_search_tool


@dataclass(frozen=True)
class Row:
    tool: str
    input: str
    first_ms: float
    median_ms: float
    repeats: int


def text_image() -> np.ndarray:
    image = np.full((240, 640, 3), 255, dtype=np.uint8)
    cv2.putText(image, "TOTAL 42.50 USD", (30, 80), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (0, 0, 0), 3)
    cv2.putText(image, "Invoice 7731", (300, 190), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (20, 20, 120), 2)
    return image


def cases() -> list[tuple[str, dict[str, Any], str]]:
    """(tool, arguments, input description); img_0 is the scene, img_1 the text image."""
    scene = "img_0 480x360 scene"
    return [
        ("calculator", {"expression": "sqrt(17 * 23) / 2"}, "expression"),
        ("crop", {"image": "img_0", "box": [100, 80, 340, 260]}, scene + ", 240x180 box"),
        ("resize", {"image": "img_0", "scale": 2.0}, scene + " -> 960x720"),
        ("rotate", {"image": "img_0", "angle": 30}, scene),
        ("flip", {"image": "img_0", "direction": "horizontal"}, scene),
        ("grayscale", {"image": "img_0"}, scene),
        ("threshold", {"image": "img_0"}, scene),
        ("enhance_contrast", {"image": "img_0"}, scene),
        ("draw_box", {"image": "img_0", "box": [10, 10, 200, 150], "label": "x"}, scene),
        ("ocr", {"image": "img_1"}, "img_1 640x240, 2 text lines"),
        ("ocr", {"image": "img_1", "region": [280, 140, 580, 230]}, "img_1, 300x90 region"),
        ("detect", {"image": "img_0"}, scene),
        ("count", {"image": "img_0", "text": "red circles"}, scene),
        ("search", {"query": "population of Keban", "k": 3}, "query, k=3"),
    ]


def search_tool() -> Any:
    if DEFAULT_CORPUS.is_file():
        return make_search_tool(BM25Provider.default()), f"{DEFAULT_CORPUS.name}"
    docs = [
        {"id": str(i), "title": f"Town {i}", "text": f"Town {i} has {i * 37} people."} for i in range(500)
    ]
    return make_search_tool(BM25Provider(docs)), "500 in-memory documents"


async def time_call(toolbox: Toolbox, name: str, arguments: dict[str, Any], context: ToolContext) -> float:
    started = time.perf_counter()
    outcome = await toolbox.call(name, arguments, context)
    elapsed = time.perf_counter() - started
    if not outcome.ok:
        raise RuntimeError(f"{name}({arguments}) failed: {outcome.error_type}: {outcome.message}")
    return elapsed * 1000


async def measure(repeats: int) -> tuple[list[Row], str]:
    search, corpus = search_tool()
    tools = [t for t in default_tools() if t.name != "search"] + [search]
    toolbox = Toolbox(tools, default_timeout_s=300)
    images = ImageStore()
    images.add(render_scene(np.random.default_rng(0)).image)
    images.add(text_image())
    context = ToolContext(images=images)
    rows = []
    for name, arguments, described in cases():
        first = await time_call(toolbox, name, arguments, context)
        samples = [await time_call(toolbox, name, arguments, context) for _ in range(repeats)]
        rows.append(Row(name, described, first, statistics.median(samples), repeats))
    return rows, corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed calls after the first, per tool")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rows, corpus = asyncio.run(measure(args.repeats))
    load = f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs"
    table = Table(title=f"Tool calls through Toolbox.call ({machine}, {load}; search over {corpus})")
    for column in ("tool", "input", "first call ms", "median ms", "calls"):
        table.add_column(column, justify="right" if "ms" in column or column == "calls" else "left")
    for row in rows:
        table.add_row(row.tool, row.input, f"{row.first_ms:,.1f}", f"{row.median_ms:,.1f}", str(row.repeats))
    Console().print(table)


if __name__ == "__main__":
    main()
