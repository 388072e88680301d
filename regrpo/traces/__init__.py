"""Traces: the episode schema (msgspec Structs), the durable ``TraceStore`` (SQLite, or PostgreSQL via
``open_store("postgresql://...")``) and the ``TraceLogger``."""

from regrpo.traces.logger import TraceLogger
from regrpo.traces.schema import (
    Action,
    Answer,
    Completion,
    Episode,
    EpisodeStatus,
    Feedback,
    ImageRecord,
    Message,
    Observation,
    Reflection,
    Step,
    StepTimings,
    ToolCall,
    Unparseable,
    Usage,
)
from regrpo.traces.store import TraceStore, open_store

__all__ = [
    "Action",
    "Answer",
    "Completion",
    "Episode",
    "EpisodeStatus",
    "Feedback",
    "ImageRecord",
    "Message",
    "Observation",
    "Reflection",
    "Step",
    "StepTimings",
    "ToolCall",
    "TraceLogger",
    "TraceStore",
    "Unparseable",
    "Usage",
    "open_store",
]
