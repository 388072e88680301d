"""The real SmolLM2-135M policy: batched sampling, log-probs equal to a fresh forward pass, adapters."""

from __future__ import annotations

import pytest
import torch
from logprob_reference import forward_logprobs

from regrpo.agent.actions import ACTION_STOP_STRINGS
from regrpo.errors import AdapterError, ModelNotFoundError

pytestmark = pytest.mark.slow

CHAT = [
    {"role": "system", "content": "Reply with <answer>...</answer>."},
    {"role": "user", "content": "Name a colour."},
]


def test_batched_sampling_returns_n_distinct_completions_with_logprobs(smollm):
    torch.manual_seed(0)
    completions = smollm.generate(CHAT, n=4, temperature=1.0, max_new_tokens=24)
    assert len(completions) == 4
    assert len({tuple(c.token_ids) for c in completions}) > 1  # sampled, not copies
    for c in completions:
        assert 0 < len(c.token_ids) == len(c.logprobs) <= 24
        assert all(lp <= 0 for lp in c.logprobs)
        assert c.prompt_tokens == len(smollm.encode_chat(CHAT))
        assert c.text == smollm.tokenizer.decode(c.token_ids, skip_special_tokens=True)


def test_n_samples_share_one_prefill_of_the_prompt(smollm):
    """Issue 12: n > 1 prefills the prompt once (one row), not n times."""
    prefilled: list[tuple[int, int]] = []  # (rows, tokens) of every forward pass over more than one token

    def record(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[1] > 1:
            prefilled.append(tuple(ids.shape))

    handle = smollm.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        smollm.generate(CHAT, n=4, temperature=1.0, max_new_tokens=4)
    finally:
        handle.remove()
    prompt = len(smollm.encode_chat(CHAT))
    assert prefilled and all(rows == 1 for rows, _ in prefilled), prefilled
    assert sum(tokens for _, tokens in prefilled) < prompt


def test_logprobs_match_a_fresh_forward_pass(smollm):
    torch.manual_seed(1)
    for completion in smollm.generate(CHAT, n=3, temperature=1.0, max_new_tokens=32):
        expected = forward_logprobs(smollm, CHAT, completion.token_ids)
        assert torch.allclose(torch.tensor(completion.logprobs), expected, atol=1e-4), (
            (torch.tensor(completion.logprobs) - expected).abs().max()
        )


def test_logprobs_are_those_of_the_tempered_distribution_sampled_from(smollm):
    """Issue 11 (4): at T != 1 each log-prob is log softmax(logits / T), not of the raw logits."""
    torch.manual_seed(2)
    (completion,) = smollm.generate(CHAT, n=1, temperature=0.5, max_new_tokens=16)
    tempered = forward_logprobs(smollm, CHAT, completion.token_ids, temperature=0.5)
    assert torch.allclose(torch.tensor(completion.logprobs), tempered, atol=1e-4)
    raw = forward_logprobs(smollm, CHAT, completion.token_ids)
    assert not torch.allclose(torch.tensor(completion.logprobs), raw, atol=1e-2)


def test_a_token_running_past_a_stop_string_ends_the_completion_and_padding_is_dropped(smollm):
    """Issue 11 (1): '>\"' completes '</answer>' and runs past it; the pad after it was kept before."""
    ids = smollm.tokenizer('<answer>blue</answer>"', add_special_tokens=False)["input_ids"]
    assert smollm.tokenizer.decode(ids[-1:]) == '>"'  # the overhanging token this test is about
    pad = smollm.tokenizer.pad_token_id
    tokens = ids + [pad, pad]
    logprobs = [-0.5] * len(ids) + [-23.0, -23.0]  # what generate reports for padding
    completion = smollm._completion(tokens, logprobs, ACTION_STOP_STRINGS, 10, None)
    assert completion.token_ids == ids and completion.logprobs == [-0.5] * len(ids)
    assert completion.finish_reason == "stop"
    # text after the stop string is never kept either, even when no padding follows
    more = smollm.tokenizer("<answer>blue</answer> and then", add_special_tokens=False)["input_ids"]
    cut = smollm._completion(more, [-0.5] * len(more), ACTION_STOP_STRINGS, 10, None)
    assert cut.text.endswith("</answer>") and cut.finish_reason == "stop"
    # a real end-of-turn is the model's choice: kept
    ended = smollm.tokenizer("blue", add_special_tokens=False)["input_ids"] + [smollm.tokenizer.eos_token_id]
    kept = smollm._completion(ended + [pad], [-0.1] * (len(ended) + 1), ACTION_STOP_STRINGS, 10, None)
    assert kept.token_ids == ended and kept.finish_reason == "stop"
    # no stop and no end: the length limit
    cut_off = smollm._completion(ids[:3], [-0.1] * 3, ACTION_STOP_STRINGS, 10, None)
    assert cut_off.token_ids == ids[:3] and cut_off.finish_reason == "length"


def test_greedy_is_deterministic_and_stops_after_a_stop_string(smollm):
    chat = [{"role": "user", "content": "Write <answer>blue</answer> and nothing else."}]
    first = smollm.generate(chat, max_new_tokens=40, stop=ACTION_STOP_STRINGS)[0]
    second = smollm.generate(chat, max_new_tokens=40, stop=ACTION_STOP_STRINGS)[0]
    assert first.token_ids == second.token_ids
    if "</answer>" in first.text:  # the model chose to close the tag: nothing may follow it
        assert first.text.rstrip().endswith("</answer>") and first.finish_reason == "stop"


def test_unknown_model_is_a_clear_error(tmp_path):
    from regrpo.agent.local import LocalPolicy

    with pytest.raises(ModelNotFoundError, match="unknown model"):
        LocalPolicy("org/some-hub-model")
    with pytest.raises(ModelNotFoundError, match="config.json"):
        LocalPolicy(tmp_path)


def test_dtype_by_name_and_a_clear_error_for_another(smollm):
    from regrpo.agent.local import LocalPolicy
    from regrpo.errors import InputError

    assert smollm.dtype == torch.float32  # the CPU default
    with pytest.raises(InputError, match=r"dtype must be one of auto, float32, bfloat16.*'float16'"):
        LocalPolicy(dtype="float16")
    policy = LocalPolicy(dtype="bfloat16")
    assert policy.dtype == torch.bfloat16
    (completion,) = policy.generate(CHAT, max_new_tokens=8)
    assert completion.token_ids and len(completion.logprobs) == len(completion.token_ids)
    assert all(lp <= 0 for lp in completion.logprobs)


def test_lora_adapter_load_activate_deactivate_unload(tmp_path, smollm):
    from peft import LoraConfig, get_peft_model

    from regrpo.agent.local import LocalPolicy

    policy = LocalPolicy()  # its own copy: adapters change the model object
    lora = get_peft_model(
        policy.model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )  # random B: changes outputs
    lora.save_pretrained(tmp_path / "adapter")
    policy = LocalPolicy()
    base = policy.generate(CHAT, max_new_tokens=8)[0]

    policy.load_adapter("v1", str(tmp_path / "adapter"))
    assert policy.adapters == ["v1"] and policy.active_adapter is None
    assert policy.generate(CHAT, max_new_tokens=8)[0].logprobs == pytest.approx(base.logprobs, abs=1e-5)

    policy.activate_adapter("v1")
    assert base.adapter is None and policy.generate(CHAT, max_new_tokens=2)[0].adapter == "v1"
    tuned = forward_logprobs(policy, CHAT, base.token_ids)
    assert not torch.allclose(tuned, torch.tensor(base.logprobs), atol=1e-3)

    policy.activate_adapter(None)
    assert forward_logprobs(policy, CHAT, base.token_ids).tolist() == pytest.approx(base.logprobs, abs=1e-4)

    with pytest.raises(AdapterError, match="already loaded"):
        policy.load_adapter("v1", str(tmp_path / "adapter"))
    with pytest.raises(AdapterError, match="not a PEFT adapter"):
        policy.load_adapter("v2", str(tmp_path))
    with pytest.raises(AdapterError, match="no adapter named"):
        policy.activate_adapter("v9")
    policy.unload_adapter("v1")
    assert policy.adapters == []
    # generation still works with no adapter left (peft must not keep a dangling active name)
    assert policy.generate(CHAT, max_new_tokens=8)[0].logprobs == pytest.approx(base.logprobs, abs=1e-4)


def test_unloading_an_inactive_adapter_keeps_the_others_usable(tmp_path):
    from peft import LoraConfig, get_peft_model

    from regrpo.agent.local import LocalPolicy

    policy = LocalPolicy()
    for seed, name in ((0, "a"), (1, "b")):
        torch.manual_seed(seed)
        lora = get_peft_model(
            LocalPolicy().model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        )
        lora.save_pretrained(tmp_path / name)
    base = policy.generate(CHAT, max_new_tokens=6)[0]
    policy.load_adapter("a", str(tmp_path / "a"))
    policy.load_adapter("b", str(tmp_path / "b"))
    policy.activate_adapter("a")
    with_a = forward_logprobs(policy, CHAT, base.token_ids)
    policy.activate_adapter(None)  # peft still names "a" as its active adapter here
    policy.unload_adapter("a")
    assert policy.adapters == ["b"] and policy.active_adapter is None
    assert policy.generate(CHAT, max_new_tokens=6)[0].logprobs == pytest.approx(base.logprobs, abs=1e-4)
    policy.activate_adapter("b")
    with_b = forward_logprobs(policy, CHAT, base.token_ids)
    assert not torch.allclose(with_a, with_b, atol=1e-3)  # b is really b, not a left-over a
    policy.unload_adapter("b")
    assert policy.generate(CHAT, max_new_tokens=6)[0].logprobs == pytest.approx(base.logprobs, abs=1e-4)
