"""The reference the engines' log-probs are checked against: one full forward pass, no KV cache."""

from __future__ import annotations

import torch


def forward_logprobs(policy, messages, token_ids, temperature=1.0):
    """log π_T(token | prefix) of each generated token from one full forward pass (no KV cache)."""
    prompt = policy.encode_chat(messages)
    ids = torch.tensor([prompt + token_ids], device=policy.device)
    with torch.inference_mode():
        logits = policy.model(ids).logits[0, len(prompt) - 1 : -1].float() / temperature
    return logits.log_softmax(-1).gather(-1, torch.tensor(token_ids)[:, None]).squeeze(-1)
