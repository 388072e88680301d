"""Tasks with checkable answers: the built-in multimodal suite, the GTA loader, and the small demo set.

- ``suite``: ``generate_suite`` / ``load_suite`` / ``builtin_suite`` / ``split``, six categories that
  need tools (``docs/task_suite.md``); ``schema``: ``Task``, ``AnswerSpec``, ``ReferenceStep``;
  ``reference``: ``run_reference`` executes a task's reference solution with the real tools.
- ``gta``: ``load_gta`` reads the GTA benchmark's ``dataset.json`` and maps its tools onto ours.
- ``demo``: arithmetic and image-geometry questions used by the runtime's examples and tests.
"""

from regrpo.tasks.demo import DemoTask, demo_tasks
from regrpo.tasks.gta import GtaFormatError, GtaTask, load_gta
from regrpo.tasks.reference import ReferenceRun, run_reference
from regrpo.tasks.schema import AnswerSpec, ReferenceStep, Task
from regrpo.tasks.suite import CATEGORIES, SuiteError, builtin_suite, generate_suite, load_suite, split

__all__ = [
    "CATEGORIES",
    "AnswerSpec",
    "DemoTask",
    "GtaFormatError",
    "GtaTask",
    "ReferenceRun",
    "ReferenceStep",
    "SuiteError",
    "Task",
    "builtin_suite",
    "demo_tasks",
    "generate_suite",
    "load_gta",
    "load_suite",
    "run_reference",
    "split",
]
