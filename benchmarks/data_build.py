"""Seconds to build warm-start data, with the OCR engine's read cache off and on, in one run.

``regrpo train data`` runs every task's reference solution with the real tools, then each step's
near-misses and faulted calls, replaying the state before each: the same image is read by ``ocr``
again and again (the reference, its retries, the orientation check's turned reads). This builds the
data for the first ``--tasks`` training tasks of the built-in suite twice, with
``OcrEngine(cache_size=0)`` and with the default cache, and prints wall time, easyocr reads and
the ratio. Both builds must produce identical examples and branch points, or the script fails: a
cache that changed the data would not be a speed-up.

Usage::

    .venv/bin/python benchmarks/data_build.py              # 24 suite tasks (18 training), ~6 min on 2 cores
    .venv/bin/python benchmarks/data_build.py --tasks 12   # quicker, noisier
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import dataclass

import msgspec
import numpy as np
from rich.console import Console
from rich.table import Table

from regrpo.learning.data_engine import DataEngineConfig, build_dataset
from regrpo.learning.records import Dataset
from regrpo.tasks.suite import builtin_suite, split
from regrpo.tools import Toolbox, default_tools
from regrpo.tools.ocr import OcrEngine, make_ocr_tool


@dataclass(frozen=True)
class Run:
    cache_size: int
    seconds: float
    reads: int
    dataset: Dataset


def build(tasks: list, cache_size: int, near_misses: int, faults: int) -> Run:
    engine = OcrEngine(cache_size=cache_size)
    engine.read(np.full((64, 64, 3), 255, dtype=np.uint8))  # load the reader outside the timing
    engine.reads = 0
    tools = [make_ocr_tool(engine) if t.name == "ocr" else t for t in default_tools()]
    config = DataEngineConfig(near_misses_per_step=near_misses, faults_per_step=faults)
    started = time.perf_counter()
    dataset = build_dataset(tasks, config=config, toolbox=Toolbox(tools), progress=False)
    return Run(cache_size, time.perf_counter() - started, engine.reads, dataset)


def records(dataset: Dataset) -> bytes:
    return msgspec.json.encode([dataset.sft_examples, dataset.branch_points])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=24, help="suite size; its training split is built")
    parser.add_argument("--near-misses", type=int, default=1)
    parser.add_argument("--faults", type=int, default=1)
    args = parser.parse_args()
    train, _ = split(builtin_suite(n=args.tasks, seed=0), 0.25, seed=0)
    runs = [build(train, size, args.near_misses, args.faults) for size in (0, 64)]
    if records(runs[0].dataset) != records(runs[1].dataset):
        raise SystemExit("the cached build produced different data: the cache is wrong")
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    table = Table(title=f"regrpo train data on {len(train)} training tasks ({machine})")
    for column in ("OCR cache", "seconds", "easyocr reads", "SFT examples", "branch points", "speed-up"):
        table.add_column(column, justify="left" if column == "OCR cache" else "right")
    for run in runs:
        table.add_row(
            "off" if run.cache_size == 0 else f"{run.cache_size} reads",
            f"{run.seconds:,.1f}",
            str(run.reads),
            str(len(run.dataset.sft_examples)),
            str(len(run.dataset.branch_points)),
            f"{runs[0].seconds / run.seconds:.2f}x",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
