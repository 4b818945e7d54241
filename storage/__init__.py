"""SQLite storage: schema, migrations and the repository (the only module that speaks SQL)."""

from storage.repository import (
    BusinessConnection,
    ChatKey,
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
    StorageUnavailable,
    is_outage,
    open_repository,
)

__all__ = [
    "BusinessConnection",
    "ChatKey",
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
    "StorageUnavailable",
    "is_outage",
    "open_repository",
]
