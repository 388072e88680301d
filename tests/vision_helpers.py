"""A real :class:`VisionPolicy` whose replies come from a script (shared by the vision tests).

A randomly initialised VLM never writes a valid tool call, so an agent episode on one needs scripted
replies; every chat the loop gives it still goes through the real processor (``encode``) first.
"""

from __future__ import annotations

from regrpo.agent.vision import VisionPolicy
from regrpo.traces.schema import Completion


class ScriptedVision(VisionPolicy):
    """Replies from ``script``; records each chat it was given and its prompt length in tokens.

    ``token_ids``: each reply carries its text's token ids (as a real engine's turns do), so the
    data engine can keep it as a traffic point's taken turn.
    """

    def __init__(self, folder, script, *, token_ids=False):
        super().__init__(folder)
        self.script, self.chats, self.prompt_tokens = list(script), [], []
        self.token_ids = token_ids

    def generate(self, messages, *, n=1, **sampling):
        self.chats.append(messages)
        self.prompt_tokens.append(int(self.encode(messages)["input_ids"].shape[1]))  # the real processor
        text = self.script.pop(0)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] if self.token_ids else []
        return [Completion(text=text, token_ids=list(ids), adapter=self.active_adapter)] * n
