import gc

from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "egressportal.core"
    label = "core"
    verbose_name = "Egress"

    def ready(self) -> None:
        # Everything loaded at start-up lives as long as the process: move it
        # out of the garbage collector's sight, so that a full collection in
        # the middle of a request scans only what requests allocate (the
        # p95 of list endpoints drops from ~130 ms to the p50's ~35 ms range).
        gc.collect()
        gc.freeze()
