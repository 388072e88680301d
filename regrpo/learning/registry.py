"""``AdapterRegistry``: versioned LoRA adapters on disk, with a crash-safe "live" pointer.

Layout under ``root``::

    root/
      v0001/                 a complete PEFT adapter folder + ``regrpo_adapter.json`` (its AdapterMeta)
      v0002/
      LIVE                   JSON {"live": "v0002" | null, "previous": ["v0001"]}
      .incoming/<random>/    adapters being written (``begin()``); never listed
      .lock                  flock'd while a writer changes the registry
      BASE.json              evaluation metrics of the base model (``metrics(None)``; the gate's cache)
      <name>.json            small state files of other writers (``write_state``: the daemon's watermark)

Why it is crash-safe (a ``kill -9`` at any instant leaves a consistent registry):

* A new adapter is written into ``.incoming/<random>/`` and becomes ``vNNNN`` by one ``os.rename``
  of the directory, after its files and metadata are fsync'd. A directory either has its final
  name or it does not, so a half-written adapter is never listed; ``prune_incoming()`` deletes the
  leftovers of dead writers.
* ``LIVE`` is replaced with write-temp + fsync + ``os.replace`` + fsync of the folder, so readers see
  the old pointer or the new one, never a torn file. It holds the stack of previously live versions,
  so ``rollback()`` goes back one promotion at a time, down to the base model (``None``).
* Version numbers are allocated under an ``fcntl.flock`` on ``.lock`` (several processes may write:
  the trainer daemon and the server's admin endpoints), and ``rename`` refuses a target that exists.

``AdapterMeta`` is a msgspec Struct (data on disk, as the trace schema); the HTTP layer converts it.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec

from regrpo.errors import AdapterError

__all__ = ["AdapterMeta", "AdapterRegistry", "META_FILE"]

META_FILE = "regrpo_adapter.json"
"""The metadata file inside each version's folder (next to PEFT's ``adapter_config.json``)."""

_VERSION = re.compile(r"^v(\d{4,})$")


class AdapterMeta(msgspec.Struct, frozen=True):
    """What is known about one adapter version."""

    version: str = ""
    """``v0001``, ``v0002``, ... (assigned by :meth:`AdapterRegistry.commit`)."""
    base_model: str = ""
    created_at: float = msgspec.field(default_factory=time.time)
    parent: str | None = None
    """The version this one was trained from (``None`` = the base model)."""
    data_since: float | None = None
    """Earliest trace timestamp (Unix seconds) in the training data window."""
    data_until: float | None = None
    """Latest trace timestamp (Unix seconds) in the training data window."""
    config: dict[str, Any] = {}
    """The training configuration (LoRA rank, learning rate, ...)."""
    metrics: dict[str, float] = {}
    """Evaluation results that justified (or not) promoting it."""
    notes: str = ""


_meta_decoder = msgspec.json.Decoder(AdapterMeta)


class _Pointer(msgspec.Struct):
    live: str | None = None
    previous: builtins.list[str] = []


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    """fsync every file and folder under ``path`` (bottom-up), so a rename publishes durable data."""
    for folder, _, files in os.walk(path, topdown=False):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(folder))


_BASE_FILE = "BASE.json"
_STATE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*\.json$")


class _BaseRecord(msgspec.Struct):
    metrics: dict[str, float] = {}


def _check_state_name(name: str) -> str:
    if not _STATE_NAME.match(name) or name == "LIVE":
        raise AdapterError(
            f"{name!r} is not a registry state file name; use letters, digits, '-', '_' + '.json'"
        )
    return name


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: write a temp file, fsync, ``os.replace``, fsync the folder."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class AdapterRegistry:
    """Versioned adapter folders with an atomic live pointer. Safe across threads and processes.

    Args:
        root: The registry folder (created if missing).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()
        try:
            (self.root / ".incoming").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AdapterError(f"cannot create adapter registry at {str(self.root)!r}: {exc}") from exc
        self._pointer_path = self.root / "LIVE"

    # -- writing a new version ----------------------------------------------------------------------

    def begin(self) -> Path:
        """A fresh empty folder to write a new adapter into; pass it to :meth:`commit` when complete."""
        return Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=self.root / ".incoming"))

    def commit(self, tmp_dir: str | os.PathLike[str], meta: AdapterMeta | None = None) -> AdapterMeta:
        """Publish a folder from :meth:`begin` as the next version; returns its metadata.

        ``meta.version`` is assigned here; ``meta.parent`` defaults to the live version. The folder must
        hold a PEFT adapter (``adapter_config.json``). It is not promoted: call :meth:`promote`.
        """
        tmp = Path(tmp_dir)
        if tmp.parent.resolve() != (self.root / ".incoming").resolve() or not tmp.is_dir():
            raise AdapterError(f"{str(tmp)!r} is not a folder from this registry's begin()")
        if not (tmp / "adapter_config.json").is_file():
            raise AdapterError(
                f"{str(tmp)!r} holds no adapter_config.json; save the PEFT adapter there first "
                "(model.save_pretrained(path))"
            )
        meta = meta or AdapterMeta()
        with self._locked():
            version = f"v{self._last_number() + 1:04d}"
            parent = meta.parent if meta.parent is not None else self._read_pointer().live
            meta = msgspec.structs.replace(meta, version=version, parent=parent)
            (tmp / META_FILE).write_bytes(msgspec.json.format(msgspec.json.encode(meta)))
            _fsync_tree(tmp)
            try:
                os.rename(tmp, self.root / version)
            except OSError as exc:
                raise AdapterError(f"cannot publish adapter {version}: {exc}") from exc
            _fsync_dir(self.root)
        return meta

    def discard(self, tmp_dir: str | os.PathLike[str]) -> None:
        """Delete an unfinished folder from :meth:`begin`."""
        shutil.rmtree(tmp_dir, ignore_errors=True)

    def prune_incoming(self, older_than_s: float = 3600.0) -> builtins.list[str]:
        """Delete unfinished folders older than ``older_than_s`` (left by writers that died)."""
        removed = []
        for folder in (self.root / ".incoming").iterdir():
            if time.time() - folder.stat().st_mtime > older_than_s:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
        return removed

    # -- reading ----------------------------------------------------------------------------------------

    def list(self) -> builtins.list[AdapterMeta]:
        """Every published version, oldest first."""
        metas = []
        for number in self._numbers():
            with contextlib.suppress(AdapterError):  # a folder someone broke by hand is skipped
                metas.append(self.get(f"v{number:04d}"))
        return metas

    def get(self, version: str) -> AdapterMeta:
        """The metadata of ``version``; :class:`AdapterError` naming the known versions if absent."""
        if not isinstance(version, str) or not _VERSION.match(version):
            raise AdapterError(f"{version!r} is not an adapter version; versions look like 'v0001'")
        try:
            return _meta_decoder.decode((self.root / version / META_FILE).read_bytes())
        except FileNotFoundError:
            known = ", ".join(f"v{n:04d}" for n in self._numbers()) or "none"
            raise AdapterError(
                f"no adapter version {version!r} in {str(self.root)!r} (known: {known})"
            ) from None
        except (OSError, msgspec.DecodeError) as exc:
            raise AdapterError(f"cannot read metadata of adapter {version!r}: {exc}") from exc

    def path(self, version: str) -> Path:
        """The folder of a published version (for ``policy.load_adapter``)."""
        self.get(version)
        return self.root / version

    def live(self) -> str | None:
        """The live version, or ``None`` when the base model is live."""
        return self._read_pointer().live

    def history(self) -> builtins.list[str]:
        """Previously live versions, most recent last (what :meth:`rollback` walks back through)."""
        return list(self._read_pointer().previous)

    # -- the live pointer -------------------------------------------------------------------------------

    def promote(self, version: str) -> AdapterMeta:
        """Make ``version`` live (the previous live version is remembered for :meth:`rollback`)."""
        meta = self.get(version)
        with self._locked():
            pointer = self._read_pointer()
            if pointer.live != version:
                # the base model (None) is not pushed: an empty stack already rolls back to it
                previous = pointer.previous + ([pointer.live] if pointer.live is not None else [])
                self._write_pointer(_Pointer(live=version, previous=previous))
        return meta

    def rollback(self) -> str | None:
        """Go back to the previously live version (``None`` = the base model) and return it."""
        with self._locked():
            pointer = self._read_pointer()
            target = pointer.previous[-1] if pointer.previous else None
            self._write_pointer(_Pointer(live=target, previous=pointer.previous[:-1]))
        return target

    # -- metrics and small state files (additions for the gate and the trainer daemon) ---------------------

    def metrics(self, version: str | None) -> dict[str, float]:
        """Recorded evaluation metrics of ``version`` (``None``: of the base model, kept in ``BASE.json``)."""
        if version is not None:
            return dict(self.get(version).metrics)
        data = self.read_state(_BASE_FILE)
        if data is None:
            return {}
        try:
            return dict(msgspec.json.decode(data, type=_BaseRecord).metrics)
        except msgspec.DecodeError as exc:
            raise AdapterError(f"cannot read {_BASE_FILE!r} in {str(self.root)!r}: {exc}") from exc

    def update_metrics(self, version: str | None, metrics: Mapping[str, float]) -> dict[str, float]:
        """Merge ``metrics`` into the recorded metrics of ``version`` (``None``: the base model).

        The metadata file is replaced atomically (temp + fsync + ``os.replace``) under the registry's
        lock, so a reader sees the old metrics or the new ones; returns the merged metrics.
        """
        with self._locked():
            merged = self.metrics(version) | {k: float(v) for k, v in metrics.items()}
            if version is None:
                self.write_state(_BASE_FILE, msgspec.json.encode(_BaseRecord(metrics=merged)))
            else:
                meta = msgspec.structs.replace(self.get(version), metrics=merged)
                _write_atomic(self.root / version / META_FILE, msgspec.json.format(msgspec.json.encode(meta)))
        return merged

    def read_state(self, name: str) -> bytes | None:
        """The bytes of the state file ``name`` in the registry folder (``None`` if never written)."""
        try:
            return (self.root / _check_state_name(name)).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AdapterError(f"cannot read {name!r} in {str(self.root)!r}: {exc}") from exc

    def write_state(self, name: str, data: bytes) -> None:
        """Replace the state file ``name`` atomically (e.g. the trainer daemon's watermark)."""
        try:
            _write_atomic(self.root / _check_state_name(name), data)
        except OSError as exc:
            raise AdapterError(f"cannot write {name!r} in {str(self.root)!r}: {exc}") from exc

    # -- internals --------------------------------------------------------------------------------------

    def _numbers(self) -> builtins.list[int]:
        numbers = []
        for entry in self.root.iterdir():
            match = _VERSION.match(entry.name)
            if match and entry.is_dir():
                numbers.append(int(match.group(1)))
        return sorted(numbers)

    def _last_number(self) -> int:
        numbers = self._numbers()
        return numbers[-1] if numbers else 0

    def _read_pointer(self) -> _Pointer:
        try:
            return msgspec.json.decode(self._pointer_path.read_bytes(), type=_Pointer)
        except FileNotFoundError:
            return _Pointer()
        except (OSError, msgspec.DecodeError) as exc:
            raise AdapterError(f"cannot read the live pointer {str(self._pointer_path)!r}: {exc}") from exc

    def _write_pointer(self, pointer: _Pointer) -> None:
        tmp = self.root / f".LIVE.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(msgspec.json.encode(pointer))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._pointer_path)
            _fsync_dir(self.root)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise AdapterError(f"cannot update the live pointer in {str(self.root)!r}: {exc}") from exc

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released by the kernel if this process dies
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def __repr__(self) -> str:
        return f"AdapterRegistry({str(self.root)!r}, live={self.live()!r})"
