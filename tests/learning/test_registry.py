"""AdapterRegistry: versions, promote/rollback, and consistency after a writer is SIGKILLed mid-write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from regrpo.errors import AdapterError
from regrpo.learning.registry import META_FILE, AdapterMeta, AdapterRegistry


def write_fake_adapter(folder, payload: bytes = b"weights") -> None:
    """Stands in for ``peft_model.save_pretrained(folder)``: the registry only checks the config file."""
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (folder / "adapter_model.safetensors").write_bytes(payload)


def publish(registry: AdapterRegistry, **meta) -> AdapterMeta:
    tmp = registry.begin()
    write_fake_adapter(tmp)
    return registry.commit(tmp, AdapterMeta(**meta))


def test_commit_assigns_versions_and_keeps_metadata(tmp_path):
    registry = AdapterRegistry(tmp_path / "reg")
    first = publish(registry, base_model="smollm2", data_since=1.0, data_until=2.0, metrics={"acc": 0.5})
    second = publish(registry, base_model="smollm2", config={"lora_r": 8}, notes="more data")

    assert (first.version, second.version) == ("v0001", "v0002")
    assert first.parent is None and second.parent is None  # nothing was live when they were made
    assert [m.version for m in registry.list()] == ["v0001", "v0002"]
    assert registry.get("v0001") == first
    assert registry.get("v0002").config == {"lora_r": 8}
    assert (registry.path("v0002") / "adapter_model.safetensors").read_bytes() == b"weights"
    assert registry.live() is None
    # a fresh object over the same folder sees the same thing (nothing is cached in memory)
    assert AdapterRegistry(tmp_path / "reg").list() == registry.list()


def test_promote_and_rollback_walk_the_history_down_to_base(tmp_path):
    registry = AdapterRegistry(tmp_path)
    for _ in range(3):
        publish(registry)
    registry.promote("v0001")
    third_parent = publish(registry).parent
    assert third_parent == "v0001"  # a new version's parent defaults to the live one
    registry.promote("v0002")
    registry.promote("v0003")
    assert registry.live() == "v0003" and registry.history() == ["v0001", "v0002"]
    assert registry.rollback() == "v0002"
    assert registry.rollback() == "v0001"
    assert registry.rollback() is None
    assert registry.rollback() is None  # already on the base model: stays there
    assert registry.live() is None


def test_bad_input_is_a_clear_adapter_error(tmp_path):
    registry = AdapterRegistry(tmp_path)
    with pytest.raises(AdapterError, match="known: none"):
        registry.promote("v0007")
    with pytest.raises(AdapterError, match="look like 'v0001'"):
        registry.get("../etc")
    empty = registry.begin()
    with pytest.raises(AdapterError, match="adapter_config.json"):
        registry.commit(empty)
    with pytest.raises(AdapterError, match="begin"):
        registry.commit(tmp_path)
    assert registry.list() == []


def test_a_torn_pointer_temp_file_does_not_change_what_is_live(tmp_path):
    registry = AdapterRegistry(tmp_path)
    publish(registry)
    registry.promote("v0001")
    (tmp_path / ".LIVE.deadbeef.tmp").write_bytes(b'{"live": "v00')  # a writer died before os.replace
    assert registry.live() == "v0001"


CHILD = textwrap.dedent(
    """
    import json, os, sys
    from regrpo.learning.registry import AdapterRegistry
    registry = AdapterRegistry(sys.argv[1])
    tmp = registry.begin()
    (tmp / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with open(tmp / "adapter_model.safetensors", "wb") as f:
        f.write(b"x" * 4096)  # the first half of the weights
        f.flush()
        os.write(1, b"half\\n")  # tell the parent: kill me now
        sys.stdin.read()  # block until killed
        f.write(b"x" * 4096)
    registry.commit(tmp)
    registry.promote("v0002")
    """
)


def test_writer_killed_mid_write_leaves_the_registry_consistent(tmp_path):
    registry = AdapterRegistry(tmp_path)
    publish(registry)
    registry.promote("v0001")

    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout.readline() == b"half\n"  # the child's adapter is half written
        os.kill(child.pid, signal.SIGKILL)
    finally:
        assert child.wait(timeout=60) == -signal.SIGKILL
        child.stdin.close()
        child.stdout.close()

    assert [m.version for m in registry.list()] == ["v0001"]  # the half-written one is not listed
    assert registry.live() == "v0001"
    leftovers = list((tmp_path / ".incoming").iterdir())
    assert len(leftovers) == 1 and (leftovers[0] / "adapter_model.safetensors").stat().st_size == 4096
    # the next writer gets the next number, and a prune clears the dead writer's folder
    assert publish(registry).version == "v0002"
    assert registry.prune_incoming(older_than_s=-1) == [leftovers[0].name]
    assert (registry.path("v0002") / META_FILE).is_file()
