"""Running on a cluster: connecting to Ray, file leases for one-at-a-time work, fault injection for tests."""

from crystalvision.core import door

__all__, __getattr__, __dir__ = door(
    __name__,
    {
        "faults": "maybe_exit_worker parse_fault train_fault",
        "lease": "Lease LockedError TRAIN_LEASE_ENV holder lease_lock renewed_on_progress",
        "raycluster": "ensure_ray processes_stopped_on_exit",
    },
)
