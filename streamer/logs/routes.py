"""Log routing: which team topics an enriched log record goes to, besides ``ops.logs.enriched.v1``.

The rules are the ``logs`` section of ``topics/routes.yaml`` (``streamer.triage.routing``), compiled once
at start-up. A rule matches on what the enriched record itself carries, so the decision can be taken
again from the record alone (when a held record's template settles, or in a replay):

* ``service``, ``severity``, ``incident_class``, ``template_id``: the record's fields;
* ``alert``: the kinds of alert this very line raised (``new_error_template``: the first line of a
  template at alerting severity; ``burst``: the line that took its window over the threshold), which
  the record lists under ``alerts``.

Pure: no I/O. The record's ``routes`` lists its destinations; ``destinations`` adds the enriched topic
in front, which is every topic the record leaves on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from streamer.logs.decode import SEVERITIES
from streamer.topics import LOGS_ENRICHED
from streamer.triage.routing import Router

__all__ = ["ALERT_KINDS", "Memo", "destinations", "known_labels", "route", "set_routes"]

#: The alert kinds a line can raise (``alert.v1.json``'s ``kind``).
ALERT_KINDS: Final = ("new_error_template", "burst")


def known_labels(incident_classes: list[str] | tuple[str, ...]) -> dict[str, list[str]]:
    """Values rules may name per field, so a typo (``severity: eror``) fails at start-up."""
    return {"severity": list(SEVERITIES), "incident_class": list(incident_classes), "alert": list(ALERT_KINDS)}


def route(record: Mapping[str, Any], router: Router) -> tuple[str, ...]:
    """The team topics of one enriched record (empty when no rule claims it and the default is ``[]``)."""
    facts = {
        "service": record.get("service"),
        "severity": record.get("severity"),
        "incident_class": record.get("incident_class"),
        "template_id": record.get("template_id"),
        "alert": record.get("alerts") or (),
    }
    return router.route(facts).destinations


#: Answers already given in one batch, by the facts a rule can name (lines repeat them a lot).
Memo = dict[tuple[Any, ...], tuple[str, ...]]


def set_routes(record: dict[str, Any], router: Router | None, memo: Memo | None = None) -> None:
    """Write the record's ``routes`` (left out when there are none, as on most lines).

    ``memo`` (one per batch) saves evaluating the rules again for facts already routed: the rules cost
    about 6 us a line, a look-up well under one.
    """
    if router is None:
        return
    if memo is None:
        found = route(record, router)
    else:
        alerts = record.get("alerts")
        key = (
            record.get("service"),
            record.get("severity"),
            record.get("incident_class"),
            record.get("template_id"),
            tuple(alerts) if alerts else (),
        )
        cached = memo.get(key)
        if cached is None:
            cached = memo[key] = route(record, router)
        found = cached
    if found:
        record["routes"] = list(found)
    else:
        record.pop("routes", None)


def destinations(record: Mapping[str, Any]) -> tuple[str, ...]:
    """Every topic an enriched record leaves on: ``ops.logs.enriched.v1``, then its routes in rule order."""
    routes = record.get("routes")
    return (LOGS_ENRICHED, *routes) if routes else (LOGS_ENRICHED,)
