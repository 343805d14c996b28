"""What a running driver tells its operator: the log line, Ray's metrics, its own memory.

The driver calls :meth:`RunProgress.tick` once per loop. It sets three Prometheus gauges
through ``ray.util.metrics`` (shown by the Ray dashboard): observations by state,
``dsa110_real_time_factor`` (wall s per imaged observation / 309 s) and
``dsa110_bytes_converted`` (UVH5 bytes). It logs the counts by state when they change, and
the driver's RSS every 5 min (:class:`engine.memtrace.MemoryLog`).
"""

from __future__ import annotations

import logging
import time

from engine.constants import CADENCE_S
from engine.memtrace import MemoryLog

log = logging.getLogger(__name__)


class RunProgress:
    """Counters and gauges of one driver run; ``tick`` takes the run's wall-clock start
    (``time.time()``, s) and the number of tasks in flight."""

    def __init__(self, reg, summary):
        self.reg = reg
        self.summary = summary
        self.memory = MemoryLog()
        self.bytes_converted = 0
        self._metrics = None
        self._last_counts = None

    def metrics(self) -> dict:
        """The gauges, created on first use (Ray must be up)."""
        if self._metrics is None:
            from ray.util import metrics

            self._metrics = {
                "obs": metrics.Gauge("dsa110_observations", "observations by state",
                                     tag_keys=("state",)),
                "rtf": metrics.Gauge("dsa110_real_time_factor",
                                     "wall time per imaged observation / 309 s"),
                # a gauge refreshed every loop, like the others: Ray's agent evicts a gauge
                # not refreshed within two export intervals (a few seconds), so the metrics
                # are live while a driver runs and gone about 30 s after it stops (measured)
                "bytes": metrics.Gauge("dsa110_bytes_converted",
                                       "UVH5 bytes converted to Measurement Sets"),
            }
        return self._metrics

    def converted(self, nbytes: int):
        """One observation converted: its input bytes (UVH5) added to the gauge."""
        self.bytes_converted += nbytes
        self.metrics()["bytes"].set(self.bytes_converted)

    def tick(self, t_start: float, n_inflight: int):
        counts = self.reg.counts("observations")
        m = self.metrics()
        for state in self.reg.MACHINE_STATES:
            m["obs"].set(counts.get(state, 0), tags={"state": str(state)})
        m["bytes"].set(self.bytes_converted)
        n = len(self.summary.imaged)
        if n:
            m["rtf"].set((time.time() - t_start) / (n * CADENCE_S))
        self.memory.tick()
        if counts != self._last_counts:
            self._last_counts = counts
            rate = n / max(time.time() - t_start, 1e-9) * 60
            log.info("observations by state %s; %d imaged (%.2f per minute), %d tasks in flight",
                     counts, n, rate, n_inflight)
