"""SQLite storage: schema, migrations and the repository (the only module that speaks SQL)."""

from storage.repository import (
    Customer,
    CustomerProfile,
    Gap,
    Job,
    JobState,
    MessageLink,
    NewJob,
    QueueStats,
    RecoveryTarget,
    Repository,
    StorageError,
    open_repository,
)

__all__ = [
    "Customer",
    "CustomerProfile",
    "Gap",
    "Job",
    "JobState",
    "MessageLink",
    "NewJob",
    "QueueStats",
    "RecoveryTarget",
    "Repository",
    "StorageError",
    "open_repository",
]
