"""Unpack vLLM 0.33.0's Python sources (not its binaries) and the small packages its protocol modules import.

``tests/server/test_vllm_protocol.py`` checks serve-model's JSON against vLLM's own pydantic classes.
vLLM cannot be installed into the test venv (it pins torch 2.14.0 and transformers < 5.21, while
constraints.txt installs 2.14.1 and 5.23; our ranges admit both, see scripts/check_dependency_ranges.py),
and importing its protocol modules needs no GPU, so this script downloads
the wheel (336 MB), keeps only ``*.py``/``*.json``/``*.jinja`` and the dist-info (61 MB), and
installs the pure dependencies those modules import into a separate ``--target`` folder. Run by
``make test`` through the Makefile; ``python scripts/fetch_vllm_protocol.py build/vllm-protocol``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VLLM = "vllm==0.33.0"
KEEP_SUFFIXES = (".py", ".json", ".jinja")
DEPENDENCIES = [
    "cbor2==6.3.0",
    "pyzmq==27.3.0",
    "aiohttp==3.14.5",
    "multidict==7.2.1",
    "yarl==1.25.1",
    "propcache==0.5.4",
    "attrs==26.1.0",
    "aiohappyeyeballs==2.7.1",
    "aiosignal==1.4.0",
    "frozenlist==1.8.0",
    "oss-harmony==0.0.11",
    "fastapi>=0.133,<0.137",
    "opentelemetry-api==1.45.2",
    "pybase64==1.5.1",
    "cachetools==8.0.2",
    "cloudpickle==3.1.3",
    "uvloop==0.23.0",
    "py-cpuinfo==9.0.0",
]


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--quiet", *args], check=True)


def main(out: Path) -> None:
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    with tempfile.TemporaryDirectory() as download:
        pip("download", VLLM, "--no-deps", "-d", download)
        (wheel,) = Path(download).glob("vllm-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            members = [
                name for name in archive.namelist() if name.endswith(KEEP_SUFFIXES) or ".dist-info/" in name
            ]
            archive.extractall(staging / "src", members)
    pip("install", "--no-deps", "--target", str(staging / "deps"), *DEPENDENCIES)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)  # complete or absent: a killed run leaves only the .partial folder


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("build/vllm-protocol"))
