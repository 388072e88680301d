"""Register your own tool with ``@tool`` and give the agent an image.

    .venv/bin/python examples/custom_tool.py

The schema comes from the type hints and the docstring; arguments are validated before the function
runs; a ``ToolContext`` parameter gives the tool the episode's images.
"""

import tempfile
from pathlib import Path

import numpy as np

from regrpo import Agent, ToolContext, ToolError, TraceStore, tool
from regrpo.tools import default_tools


@tool
def mean_brightness(image: str, ctx: ToolContext) -> float:
    """Average brightness of an image, from 0 (black) to 255 (white).

    Args:
        image: Id of the image, like img_0.
    """
    pixels = ctx.images.get(image)  # raises a ToolError naming the valid ids if the id is wrong
    if pixels.size == 0:
        raise ToolError("the image is empty")
    return round(float(pixels.mean()), 1)


print("schema:", mean_brightness.parameters_schema())

picture = np.full((64, 96, 3), 200, dtype=np.uint8)  # numpy arrays, PIL images, paths and bytes all work
agent = Agent(
    tools=[*default_tools(), mean_brightness],
    store=TraceStore(Path(tempfile.mkdtemp()) / "traces.sqlite"),
    max_steps=2,
    max_new_tokens=64,
)
result = agent.run("How bright is img_0?", picture)
print(f"answer={result.answer!r} status={result.status}")
for step in result.steps:
    observation = step.observation
    print(
        f"  step {step.index}: {step.action!r} -> {observation.content[:100] if observation else '(answer)'}"
    )
