"""Pure triage core: extraction, PII redaction, language, routing and escalation decisions."""
