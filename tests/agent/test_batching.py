"""Concurrent calls share forward passes: the queue's rules (fast fakes), then the real SmolLM2 batched.

The invariance the batched engine must keep: every row of a mixed batch (different prompt lengths,
stop strings, ``n``) has the token ids and log-probs a fresh single-sequence forward pass gives, and
greedy rows are the same batched and alone.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import CancelledError

import pytest
import torch
from logprob_reference import forward_logprobs

from regrpo.agent.actions import ACTION_STOP_STRINGS
from regrpo.agent.batching import BatchQueue, padded_rows
from regrpo.errors import InputError, ModelError

# -- the queue, with a fake model: requests are (name, rows, key) -------------------------------


def fake_queue(max_rows=4, fail=()):
    batches = []

    def run(requests):
        batches.append([name for name, _, _ in requests])
        if any(name in fail for name, _, _ in requests):
            raise ModelError("boom")
        return [f"{name}!" for name, _, _ in requests]

    queue = BatchQueue(run, max_rows=max_rows, rows=lambda r: r[1], key=lambda r: r[2])
    return queue, batches


def test_waiting_requests_of_one_key_run_together_oldest_first_within_the_row_budget():
    queue, batches = fake_queue(max_rows=4)
    tickets = [
        queue.submit(request)
        for request in [("a", 1, 0.0), ("b", 2, 1.0), ("c", 2, 0.0), ("d", 1, 0.0), ("e", 9, 0.0)]
    ]
    assert queue.wait(tickets[-1]) == "e!"  # the waiting caller runs batches until its own is done
    # a, c, d share key 0.0 and fit in 4 rows; b waits for its own key; e is too big: alone
    assert batches == [["a", "c", "d"], ["b"], ["e"]]
    assert [t.future.result() for t in tickets] == ["a!", "b!", "c!", "d!", "e!"]
    assert len(queue) == 0 and queue.batch_sizes == [3, 1, 1]


def test_max_rows_one_runs_every_request_alone_in_order():
    queue, batches = fake_queue(max_rows=1)
    tickets = [queue.submit((name, 1, 0.0)) for name in "abc"]
    queue.wait(tickets[-1])
    assert batches == [["a"], ["b"], ["c"]]


def test_a_failing_request_fails_alone_and_the_queue_goes_on(caplog):
    queue, batches = fake_queue(fail={"b"})
    tickets = [queue.submit((name, 1, 0.0)) for name in "abc"]
    queue.wait(tickets[0])
    assert batches == [["a", "b", "c"], ["a"], ["b"], ["c"]]  # the batch failed: rerun one by one
    assert queue.split_batches == 1 and queue.batch_sizes == [3]  # the split is counted, and said:
    assert "a batch of 3 requests failed (ModelError: boom); running each alone" in caplog.text
    assert tickets[0].future.result() == "a!" and tickets[2].future.result() == "c!"
    with pytest.raises(ModelError, match="boom"):
        queue.wait(tickets[1])
    assert queue(("d", 1, 0.0)) == "d!"  # not wedged


def test_a_cancelled_request_is_dropped_before_it_runs():
    queue, batches = fake_queue()
    a, b, c = (queue.submit((name, 1, 0.0)) for name in "abc")
    assert queue.cancel(b)
    assert queue.wait(c) == "c!"
    assert batches == [["a", "c"]]
    with pytest.raises(CancelledError):
        queue.wait(b)
    assert not queue.cancel(a)  # done: too late to cancel


def test_calls_arriving_while_a_batch_runs_coalesce_into_the_next():
    started, release = threading.Event(), threading.Event()
    batches = []

    def run(requests):
        batches.append(list(requests))
        if requests == ["first"]:
            started.set()
            release.wait(5)
        return [r.upper() for r in requests]

    queue = BatchQueue(run, max_rows=8, rows=lambda r: 1, key=lambda r: 0)
    results = {}

    def call(request):
        results[request] = queue(request)

    threads = [threading.Thread(target=call, args=("first",))]
    threads[0].start()
    assert started.wait(5)
    for request in ("x", "y", "z"):
        threads.append(threading.Thread(target=call, args=(request,)))
        threads[-1].start()
    while len(queue) < 3:
        time.sleep(0.01)
    release.set()
    for thread in threads:
        thread.join(5)
    assert batches[0] == ["first"] and sorted(batches[1]) == ["x", "y", "z"] and len(batches) == 2
    assert results == {"first": "FIRST", "x": "X", "y": "Y", "z": "Z"}


def test_a_batch_waits_its_window_for_callers_started_together_but_not_once_full():
    batches = []

    def run(requests):
        batches.append(sorted(requests))
        return requests

    queue = BatchQueue(run, max_rows=3, rows=lambda r: 1, key=lambda r: 0, window_s=5.0)
    threads = [threading.Thread(target=queue, args=(name,)) for name in "abc"]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert batches == [["a", "b", "c"]]
    assert time.monotonic() - started < 4  # full: it did not wait out the window
    lone = BatchQueue(run, max_rows=3, rows=lambda r: 1, key=lambda r: 0, window_s=0.05)
    assert lone("d") == "d"  # a lone caller waits the window, then runs


def test_rows_are_padded_after_the_shared_prefix():
    ids, mask = padded_rows([[1, 2, 3, 4], [1, 2, 5], [1, 2, 6, 7, 8]], 2, 0)
    assert ids == [[1, 2, 0, 3, 4], [1, 2, 0, 0, 5], [1, 2, 6, 7, 8]]
    assert mask == [[1, 1, 0, 1, 1], [1, 1, 0, 0, 1], [1, 1, 1, 1, 1]]
    assert padded_rows([[3], [4, 5]], 0, 9) == ([[9, 3], [4, 5]], [[0, 1], [1, 1]])  # left padding


# -- the real model -----------------------------------------------------------------------------

SYSTEM = {"role": "system", "content": "You answer in one short sentence, inside <answer>...</answer>."}
CHATS = [
    [SYSTEM, {"role": "user", "content": "Name a colour."}],
    [SYSTEM, {"role": "user", "content": "What is the capital of France, and why is it famous?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
]


def coalesced(policy, calls, during=None):
    """Run ``calls`` (kwargs of ``generate``) from threads so that they all share one batch.

    The engine lock is held while a one-token "plug" call starts, so the calls queue behind it;
    ``during`` is started in a thread of its own once they are queued, before the lock is released.
    """
    results, errors = {}, {}

    def call(key, kwargs):
        try:
            results[key] = policy.generate(**kwargs)
        except Exception as exc:
            errors[key] = exc

    plug = {"messages": CHATS[0], "max_new_tokens": 1, "temperature": 0.0}
    threads = [threading.Thread(target=call, args=("plug", plug))]
    before = len(policy._queue.batch_sizes)
    with policy._lock:
        threads[0].start()
        while len(policy._queue.batch_sizes) == before:  # the plug's batch started: it waits for the lock
            time.sleep(0.01)
        for i, kwargs in enumerate(calls):
            threads.append(threading.Thread(target=call, args=(i, kwargs)))
            threads[-1].start()
        while len(policy._queue) < sum(kwargs.get("n", 1) > 0 for kwargs in calls):
            time.sleep(0.01)
        if during is not None:
            threads.append(threading.Thread(target=during))
            threads[-1].start()
    for thread in threads:
        thread.join(300)
    return [results.get(i, errors.get(i)) for i in range(len(calls))]


@pytest.mark.slow
@pytest.mark.parametrize("chats", [CHATS[:2], CHATS], ids=["shared-prefix", "left-padded"])
def test_every_row_of_a_mixed_batch_matches_a_fresh_forward_pass(smollm, chats):
    calls = [
        {"messages": chats[0], "n": 2, "temperature": 0.8, "max_new_tokens": 20, "stop": ACTION_STOP_STRINGS},
        {"messages": chats[1], "n": 1, "temperature": 0.8, "max_new_tokens": 12, "stop": ()},
    ]
    if len(chats) > 2:
        calls.append({"messages": chats[2], "n": 2, "temperature": 0.8, "max_new_tokens": 16, "stop": ("4",)})
    torch.manual_seed(3)
    before = len(smollm._queue.batch_sizes)
    outputs = coalesced(smollm, calls)
    assert smollm._queue.batch_sizes[before:] == [1, len(calls)]  # the plug, then all calls at once
    for kwargs, completions in zip(calls, outputs, strict=True):
        assert len(completions) == kwargs["n"]
        prompt_tokens = len(smollm.encode_chat(kwargs["messages"]))
        for c in completions:
            assert 0 < len(c.token_ids) == len(c.logprobs) <= kwargs["max_new_tokens"]
            assert c.prompt_tokens == prompt_tokens
            assert c.text == smollm.tokenizer.decode(c.token_ids, skip_special_tokens=True)
            expected = forward_logprobs(smollm, kwargs["messages"], c.token_ids, temperature=0.8)
            assert torch.allclose(torch.tensor(c.logprobs), expected, atol=1e-4), (
                (torch.tensor(c.logprobs) - expected).abs().max()
            )
            if c.finish_reason == "stop" and kwargs["stop"]:  # cut just after its own stop string
                ended = c.token_ids[-1] in smollm._end_ids
                assert ended or any(s in c.text for s in kwargs["stop"])
                assert ended or not any(
                    s in smollm.tokenizer.decode(c.token_ids[:-1], skip_special_tokens=True)
                    for s in kwargs["stop"]
                )


@pytest.mark.slow
def test_greedy_rows_are_the_same_batched_and_alone_and_a_bad_call_fails_alone(smollm):
    calls = [
        {"messages": chat, "temperature": 0.0, "max_new_tokens": 16, "stop": ACTION_STOP_STRINGS}
        for chat in CHATS[:2]
    ] + [{"messages": CHATS[0], "n": 0}]  # n=0: refused in its own thread, before it queues
    *batched, bad = coalesced(smollm, calls)
    assert isinstance(bad, InputError)
    for kwargs, (together,) in zip(calls, batched, strict=False):
        (alone,) = smollm.generate(**kwargs)
        assert together.token_ids == alone.token_ids and together.finish_reason == alone.finish_reason
        assert together.logprobs == pytest.approx(alone.logprobs, abs=1e-4)


@pytest.mark.slow
def test_a_cancelled_agenerate_leaves_the_queue_before_it_runs(smollm):
    before = len(smollm._queue.batch_sizes)

    async def scenario():
        lock_released = threading.Event()

        def hold():
            with smollm._lock:
                lock_released.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        plug = asyncio.create_task(smollm.agenerate(CHATS[0], max_new_tokens=1))
        while len(smollm._queue.batch_sizes) == before:  # the plug's batch started; it waits for the lock
            await asyncio.sleep(0.01)
        doomed = asyncio.create_task(smollm.agenerate(CHATS[1], max_new_tokens=8))
        while len(smollm._queue) == 0:
            await asyncio.sleep(0.01)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert len(smollm._queue) == 0  # dropped at once
        lock_released.set()
        (completion,) = await plug
        holder.join()
        return completion

    completion = asyncio.run(scenario())
    assert len(completion.token_ids) == 1
    assert smollm._queue.batch_sizes[before:] == [1]  # only the plug ran


@pytest.mark.slow
def test_an_adapter_switch_falls_between_batches_and_each_row_names_the_adapter_that_made_it():
    from peft import LoraConfig

    from regrpo.agent.local import LocalPolicy

    policy = LocalPolicy()  # its own copy: adapters change the model object
    torch.manual_seed(0)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    policy.add_trainable_adapter("tuned", config)  # random B: changes the outputs; active
    calls = [{"messages": chat, "max_new_tokens": 6} for chat in CHATS[:2]]
    outputs = coalesced(policy, calls, during=lambda: policy.activate_adapter(None))
    assert policy.active_adapter is None
    labels = {c.adapter for completions in outputs for c in completions}
    assert len(labels) == 1  # one batch, one adapter
    for kwargs, (completion,) in zip(calls, outputs, strict=True):
        policy.activate_adapter(completion.adapter)
        expected = forward_logprobs(policy, kwargs["messages"], completion.token_ids)
        assert torch.allclose(torch.tensor(completion.logprobs), expected, atol=1e-4)
        policy.activate_adapter("tuned" if completion.adapter is None else None)
        other = forward_logprobs(policy, kwargs["messages"], completion.token_ids)
        assert not torch.allclose(torch.tensor(completion.logprobs), other, atol=1e-3)  # it tells them apart


@pytest.mark.slow
def test_calls_naming_different_adapters_batch_per_adapter_and_are_never_mixed():
    """Issue 12: two adapters in flight at once; each completion is its named adapter's."""
    from peft import LoraConfig

    from regrpo.agent.local import LocalPolicy
    from regrpo.errors import AdapterError

    policy = LocalPolicy()
    torch.manual_seed(0)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    policy.add_trainable_adapter("tuned", config)  # random B: changes the outputs
    names = ["tuned", None, "tuned", "missing"]
    calls = [{"messages": CHATS[i % 2], "max_new_tokens": 6, "adapter": name} for i, name in enumerate(names)]
    before = len(policy._queue.batch_sizes)
    outputs = coalesced(policy, calls[:3])
    plug, *rest = policy._queue.batch_sizes[before:]
    assert plug == 1 and sorted(rest) == [1, 2]  # the "tuned" calls together, the base call alone
    for kwargs, (completion,) in zip(calls, outputs, strict=False):
        assert completion.adapter == kwargs["adapter"]
        policy.activate_adapter(kwargs["adapter"])
        expected = forward_logprobs(policy, kwargs["messages"], completion.token_ids)
        assert torch.allclose(torch.tensor(completion.logprobs), expected, atol=1e-4)
    with pytest.raises(AdapterError, match="missing"):  # refused in the caller's thread, before it queues
        policy.generate(**calls[3])


@pytest.mark.slow
def test_a_seeded_call_runs_alone_and_repeats(smollm):
    kwargs = {"messages": CHATS[0], "temperature": 1.0, "max_new_tokens": 12, "seed": 7}
    first, second = (smollm.generate(**kwargs)[0] for _ in range(2))
    assert first.token_ids == second.token_ids
    before = len(smollm._queue.batch_sizes)
    outputs = coalesced(smollm, [kwargs, kwargs])
    assert smollm._queue.batch_sizes[before:] == [1, 1, 1]  # never coalesced
    assert all(completions[0].token_ids == first.token_ids for completions in outputs)
