"""``--log-format json``: each log line one JSON object, for a log shipper to index.

Structured facts travel on a record as ``extra={"fields": {...}}`` (the access log
and the event log set them); the formatter writes them beside the time, level,
logger and message. Only what a caller put in ``fields`` is written, never the
record's other attributes, so nothing reaches the log by accident: the callers
already leave out query strings (signature, echostr) and secrets, as the text lines
do.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from qywx_cli.core.observe import Handled, Observer

__all__ = ["EventLog", "JsonFormatter"]

event_log = logging.getLogger("qywx.events")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update({k: v for k, v in fields.items() if k not in doc})
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


class EventLog(Observer):
    """One line per handler run: which record, instance and event, the result, the time.

    Failures are warnings (the record waits for ``qywx retry``); the error is the
    record's one-line ``last_error``, which never holds a secret.
    """

    def handled(self, run: Handled) -> None:
        level = logging.WARNING if run.status == "failed" else logging.INFO
        if not event_log.isEnabledFor(level):
            return
        latency_ms = round(run.seconds * 1000, 1)
        event_log.log(
            level,
            "callback %s %s (%s) %s in %.1fms%s",
            run.record_id,
            run.event or "-",
            run.instance,
            run.status,
            latency_ms,
            f": {run.error}" if run.error else "",
            extra={
                "fields": {
                    "route": "worker",
                    "record_id": run.record_id,
                    "instance": run.instance,
                    "event": run.event,
                    "outcome": run.status,
                    "latency_ms": latency_ms,
                    "error": run.error,
                }
            },
        )
