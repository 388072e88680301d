"""Every engine refuses sampling arguments it cannot honour, with the same clear error."""

from __future__ import annotations

import pytest

from regrpo.agent.policy import check_sampling
from regrpo.agent.scripted import ScriptedPolicy
from regrpo.errors import InputError


@pytest.mark.parametrize("n, temperature, max_new_tokens", [(0, 0.0, 8), (1, -0.1, 8), (1, 0.0, 0)])
def test_bad_sampling_arguments_are_input_errors_naming_the_values(n, temperature, max_new_tokens):
    with pytest.raises(InputError, match=f"n={n}, max_new_tokens={max_new_tokens}"):
        check_sampling(n, temperature, max_new_tokens)
    with pytest.raises(InputError):
        ScriptedPolicy(["x"]).generate([], n=n, temperature=temperature, max_new_tokens=max_new_tokens)


def test_good_sampling_arguments_pass():
    check_sampling(4, 1.0, 1)
    assert len(ScriptedPolicy(["x"]).generate([], n=2, temperature=0.7)) == 2
