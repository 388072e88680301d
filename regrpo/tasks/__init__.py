"""Tasks with checkable answers: for now the small demo set; the full multimodal suite comes next."""

from regrpo.tasks.demo import DemoTask, demo_tasks

__all__ = ["DemoTask", "demo_tasks"]
