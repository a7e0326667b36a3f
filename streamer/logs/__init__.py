"""Log triage core: decode log lines, mine stable templates, extract entities, detect bursts, escalate.

Pure like ``streamer.triage``: no Kafka, no settings, no clock, nothing above it imported. The processor
(``streamer.pipeline.logs``) decodes raw records with ``decode_logs``, keeps one ``LogTriageState`` per
worker (loaded from and published to the compacted templates topic by the log service) and calls
``triage_logs`` per batch with the incident model.
"""

from streamer.logs.bursts import Burst, BurstConfig, BurstDetector, ErrorTemplateWatch
from streamer.logs.decode import SEVERITIES, SEVERITY_RANK, LogRecord, decode_log, decode_logs, normalise_severity
from streamer.logs.extract import extract_log_entities, ip_entities
from streamer.logs.templates import MinerConfig, Template, TemplateChanges, TemplateMiner, mask, template_record
from streamer.logs.triage import (
    IncidentClassifier,
    LogBatchResult,
    LogTriageConfig,
    LogTriageState,
    headline,
    triage_logs,
)

__all__ = [
    "SEVERITIES",
    "SEVERITY_RANK",
    "Burst",
    "BurstConfig",
    "BurstDetector",
    "ErrorTemplateWatch",
    "IncidentClassifier",
    "LogBatchResult",
    "LogRecord",
    "LogTriageConfig",
    "LogTriageState",
    "MinerConfig",
    "Template",
    "TemplateChanges",
    "TemplateMiner",
    "decode_log",
    "decode_logs",
    "extract_log_entities",
    "headline",
    "ip_entities",
    "mask",
    "normalise_severity",
    "template_record",
    "triage_logs",
]
