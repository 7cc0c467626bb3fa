"""Bot Scheduler: the platform-neutral core (models, scheduler, API, stores, backends)."""

__version__ = "0.1.0"
