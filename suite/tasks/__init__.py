"""One task per domain; importing this package registers them all in `TASKS`."""

from suite.tasks.base import TASKS, Task, TrainingConfig

__all__ = ["TASKS", "Task", "TrainingConfig"]
