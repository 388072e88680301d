"""A user's verifier scores each episode's answer and is recorded with it as feedback (issue 13)."""

from __future__ import annotations

import pytest

from regrpo import Agent, ScriptedPolicy
from regrpo.errors import InputError
from regrpo.verifier import VerifierError

seen: list[tuple[object, object]] = []


def says_42(task, answer):
    seen.append((task, answer))
    return 1.0 if answer == "42" else 0.0


def half(task, answer):
    return 0.5


def agent(store, **kwargs) -> Agent:
    return Agent(ScriptedPolicy(["<answer>42</answer>"], cycle=True), tools=[], store=store, **kwargs)


def test_the_agents_verifier_scores_every_episode_and_is_recorded_as_feedback(store):
    seen.clear()
    result = agent(store, verifier=says_42).run("What is 6*7?")
    assert result.reward == 1.0 and seen == [("What is 6*7?", "42")]
    (feedback,) = store.get(result.trace_id).feedback
    assert feedback.reward == 1.0 and feedback.source == f"verifier:{__name__}:says_42"
    overridden = agent(store, verifier=says_42).run("Half?", verifier=half)
    assert overridden.reward == 0.5 and store.get(overridden.trace_id).feedback[0].source.endswith(":half")
    plain = agent(store).run("No verifier")
    assert plain.reward is None and store.get(plain.trace_id).feedback == []


@pytest.mark.parametrize(
    ("verifier", "message"),
    [
        (lambda task, answer: 1 / 0, "raised ZeroDivisionError: division by zero"),
        (lambda task, answer: 1.5, "returned 1.5; it must return a number from 0 to 1"),
        (lambda task, answer: "yes", "returned 'yes'"),
        (lambda task, answer: True, "returned True"),
    ],
)
def test_a_broken_verifier_raises_naming_it_after_the_episode_is_stored(store, verifier, message):
    with pytest.raises(VerifierError, match=message) as error:
        agent(store).run("What is 6*7?", verifier=verifier)
    assert "<lambda>" in str(error.value)
    episode = store.get(error.value.trace_id)
    assert episode.status == "answered" and episode.answer == "42" and episode.feedback == []


def test_a_verifier_that_is_not_a_function_is_refused_up_front(store):
    with pytest.raises(InputError, match="verifier must be a function"):
        agent(store, verifier=0.5)
    with pytest.raises(InputError, match="verifier must be a function"):
        agent(store).run("q", verifier="tests:check")
