"""Named, versioned metric protocols: which (metric, embedder, options) make up a published set.

A protocol is one module here defining ``PROTOCOL`` (a ``Protocol``); ``get_protocol(name)``
finds it by its name. Every metric row scored under a protocol stores ``details.protocol``
(name, version, the entry's label and the reference tool's name for the figure), and reports
print it beside the figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.plugins import import_modules

__all__ = ["Protocol", "ProtocolEntry", "available_protocols", "get_protocol"]


@dataclass(frozen=True)
class ProtocolEntry:
    """One figure of a protocol: a registered metric on a registered embedder with options."""

    label: str  # the column name the publication uses, e.g. "FD", "KL"
    metric: str
    embedder: str
    options: dict[str, Any] = field(default_factory=dict)  # embedder options
    source_name: str = ""  # the reference tool's name for it, e.g. "frechet_distance"


@dataclass(frozen=True)
class Protocol:
    """A named, versioned list of entries; an embedder appears with one option set only."""

    name: str
    version: str
    description: str
    entries: tuple[ProtocolEntry, ...]

    @property
    def key(self) -> str:
        """``name@version``, as stored with every row."""
        return f"{self.name}@{self.version}"

    def embedders(self) -> dict[str, dict[str, Any]]:
        """Embedder name -> options, in entry order."""
        out: dict[str, dict[str, Any]] = {}
        for e in self.entries:
            if out.setdefault(e.embedder, e.options) != e.options:
                raise ValueError(f"protocol {self.key}: embedder {e.embedder} appears with two option sets")
        return out

    def entry(self, metric: str, embedder: str) -> ProtocolEntry | None:
        """The entry of (metric, embedder), if the protocol has it."""
        return next((e for e in self.entries if e.metric == metric and e.embedder == embedder), None)


def _modules() -> dict[str, Protocol]:
    found = {}
    for module in import_modules("harness.score.protocols"):
        proto = getattr(module, "PROTOCOL", None)
        if isinstance(proto, Protocol):
            found[proto.name] = proto
    return found


def available_protocols() -> list[str]:
    """Protocol names, sorted."""
    return sorted(_modules())


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; ValueError listing the valid names otherwise."""
    found = _modules()
    if name not in found:
        raise ValueError(f"unknown protocol {name!r}; valid: {', '.join(sorted(found)) or 'none'}")
    return found[name]
