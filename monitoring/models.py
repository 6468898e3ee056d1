"""The workers' heartbeats: which `cashback_worker` processes run, and when each last
completed a pass."""

from __future__ import annotations

from django.db import models


class WorkerHeartbeat(models.Model):
    """One `cashback_worker` process, by host and pid; updated after its passes."""

    worker = models.CharField(max_length=120, unique=True, help_text="host:pid")
    host = models.CharField(max_length=100)
    pid = models.PositiveIntegerField()
    version = models.CharField(max_length=40)
    started_at = models.DateTimeField()
    last_pass_at = models.DateTimeField(db_index=True)
    # Set when the process stopped on a signal; a killed one just stops beating.
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_pass_at"]

    def __str__(self) -> str:
        return self.worker
