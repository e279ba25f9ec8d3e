"""Machine-readable output for the CLI: `-o json` documents and `-o ndjson` event streams.

Every document and every event carries `apiVersion: edgeship/v1` and a `kind` (events: kind
`Event` and a `type`), and matches its JSON Schema in `edgeship/schemas/` (`schema_for(kind)`).
JSON goes to stdout; human progress stays on stderr, so `edgeship apply -o ndjson | jq` works.
"""

from __future__ import annotations

import json
import sys
import threading
from importlib import resources
from typing import Any, TextIO

from edgeship.events import Event
from edgeship.results import document

FORMATS = ("text", "json")


def add_output_option(parser, formats: tuple[str, ...] = FORMATS, short: bool = True) -> None:
    """`-o/--output FORMAT` (kubectl style); `--format` is the same option where `-o` means a folder."""
    flags = ("-o", "--output") if short else ("--format",)
    parser.add_argument(*flags, dest="output_format", choices=formats, default="text", metavar="FORMAT",
                        help=f"output format: {', '.join(formats)} (default: text; json: one versioned document, "
                             "see docs/output.md" + ("; ndjson: one event per line as it happens" if "ndjson" in formats else "")
                             + ")")


def wants(args, fmt: str) -> bool:
    return getattr(args, "output_format", "text") == fmt


def print_document(kind: str, stream: TextIO | None = None, **payload: Any) -> None:
    out = stream or sys.stdout
    json.dump(document(kind, **payload), out, indent=2, default=str)
    out.write("\n")
    out.flush()


class NdjsonWriter:
    """Event callback writing one JSON object per line (thread-safe: applies emit from worker threads)."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        self.write(event.to_dict())

    def document(self, kind: str, **payload: Any) -> None:
        """The stream's last line: the operation's result document."""
        self.write(document(kind, **payload))

    def write(self, data: dict) -> None:
        line = json.dumps(data, default=str, separators=(",", ":"))
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()


def schema_for(kind: str) -> dict:
    """The JSON Schema of an output document kind (or "Event")."""
    name = "event" if kind == "Event" else kind
    text = resources.files("edgeship").joinpath("schemas", f"{name}.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def schema_kinds() -> list[str]:
    folder = resources.files("edgeship").joinpath("schemas")
    return sorted(p.name[: -len(".schema.json")] for p in folder.iterdir() if p.name.endswith(".schema.json"))
