"""Logging set-up: readable text lines, or one JSON object per line (RELAY_LOG_FORMAT=json);
the default, "auto", is text when stderr is a terminal and JSON otherwise (a service manager's
journal, a file, a pipe), so a log meant for machines is parsed by machines.

Structured fields travel in the record's `extra` (e.g. method, path, status, duration_ms) and
appear as JSON keys, or as key=value pairs after the message in text mode (a value with spaces,
quotes or `=` in it is quoted as a JSON string).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import IO, Any

import msgspec

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_json = msgspec.json.Encoder()
_BARE = re.compile(r"[^\s\"=]*")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


def _timestamp(record: logging.LogRecord) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{stamp}.{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _json.encode(entry).decode("utf-8")


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={_text(v)}" for k, v in _extras(record).items())
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extras:
            line = f"{line} {extras}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def _text(value: Any) -> str:
    text = str(value)
    return text if _BARE.fullmatch(text) else _json.encode(text).decode("utf-8")


def json_lines(log_format: str, stream: IO[str]) -> bool:
    """Whether `log_format` ("auto", "text" or "json") means JSON lines on `stream`."""
    if log_format == "auto":
        return not stream.isatty()
    return log_format == "json"


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    """Send every logger (ours and hypercorn's) to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    use_json = json_lines(log_format, sys.stderr)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
