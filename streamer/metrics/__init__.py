"""Prometheus metrics of a worker process, its operations endpoints and its consumer-lag probes.

* ``registry``: ``Metrics`` (every series, both paths counted from ``streamer.pipeline.Batch``) and
  ``exported_names``;
* ``server``: ``OpsService`` (``/metrics``, ``/health``, ``/ready`` and the lag poller in the worker's
  loop), ``Readiness``, ``ops_routes``, ``listening_socket``, ``cannot_listen``;
* ``lag``: ``LagProbe`` and ``lag_probe``, one per consumer group (tickets and logs).

No module here imports ``streamer.agents``: the adapters hand over a ``Batch``, and the metrics read it.
"""

from streamer.metrics.lag import LAG_INTERVAL_S, LagProbe, lag_probe
from streamer.metrics.registry import ESCALATION_WINDOW, Metrics, exported_names
from streamer.metrics.server import BROKER_STALE_S, OpsService, Readiness, cannot_listen, listening_socket, ops_routes

__all__ = [
    "BROKER_STALE_S",
    "ESCALATION_WINDOW",
    "LAG_INTERVAL_S",
    "LagProbe",
    "Metrics",
    "OpsService",
    "Readiness",
    "cannot_listen",
    "exported_names",
    "lag_probe",
    "listening_socket",
    "ops_routes",
]
