"""multipart/form-data as a stream of events (sans-I/O), so a body is handled as it arrives.

python-multipart's push parser does the byte work (boundaries split across reads, headers);
this turns its callbacks into `Part` / `Data` / `PartEnd` events that `feed` returns, and bounds
what a client can make us hold: header sizes and counts (the parser's own limits) and parts.
"""

from __future__ import annotations

import msgspec
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

MAX_PARTS = 16  # payload_json and files[0..9], with room to spare
MAX_BOUNDARY = 70  # RFC 2046


class FormError(Exception):
    """The body is not well-formed multipart/form-data (a 400)."""


class Part(msgspec.Struct, frozen=True):
    name: str
    filename: str | None  # None: a plain field


class Data(msgspec.Struct, frozen=True):
    data: bytes


class PartEnd(msgspec.Struct, frozen=True):
    pass


Event = Part | Data | PartEnd


def boundary_of(content_type: str) -> bytes:
    """The boundary of a `multipart/form-data; boundary=...` header (FormError if none)."""
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary", b"")
    if kind != b"multipart/form-data" or not 0 < len(boundary) <= MAX_BOUNDARY:
        raise FormError("expected multipart/form-data with a boundary")
    return boundary


class FormStream:
    def __init__(self, boundary: bytes) -> None:
        self._events: list[Event] = []
        self._field = bytearray()
        self._value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._parts = 0
        self.ended = False
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._begin,
                "on_part_data": self._data,
                "on_part_end": self._end,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_end": self._on_end,
            },
            max_header_count=4,
            max_header_size=1024,
        )

    def feed(self, data: bytes) -> list[Event]:
        """The events the next bytes of the body complete (FormError if malformed)."""
        try:
            self._parser.write(data)
        except FormParserError as e:
            raise FormError(f"malformed multipart body: {e}") from None
        events, self._events = self._events, []
        return events

    def close(self) -> None:
        """The body ended: FormError unless the closing boundary was seen."""
        if not self.ended:
            raise FormError("the multipart body ended early")

    def _begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise FormParserError(f"more than {MAX_PARTS} parts")
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[bytes(self._field).lower()] = bytes(self._value)
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        disposition = self._headers.get(b"content-disposition")
        if disposition is None:
            raise FormParserError("a part has no Content-Disposition")
        kind, options = parse_options_header(disposition)
        name = options.get(b"name")
        if kind != b"form-data" or name is None:
            raise FormParserError("a part is not form-data with a name")
        filename = options.get(b"filename")
        self._events.append(
            Part(
                name.decode("utf-8", "replace"),
                filename.decode("utf-8", "replace") if filename is not None else None,
            )
        )

    def _data(self, data: bytes, start: int, end: int) -> None:
        if end > start:
            self._events.append(Data(data[start:end]))

    def _end(self) -> None:
        self._events.append(PartEnd())

    def _on_end(self) -> None:
        self.ended = True
