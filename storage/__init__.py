"""SQLite storage: schema, migrations and the repository (the only module that speaks SQL)."""

from storage.repository import (
    Customer,
    CustomerProfile,
    Job,
    JobState,
    MessageLink,
    NewJob,
    QueueStats,
    Repository,
    StorageError,
    open_repository,
)

__all__ = [
    "Customer",
    "CustomerProfile",
    "Job",
    "JobState",
    "MessageLink",
    "NewJob",
    "QueueStats",
    "Repository",
    "StorageError",
    "open_repository",
]
