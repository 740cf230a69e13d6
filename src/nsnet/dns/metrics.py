"""The resolver's counters and their Prometheus text.

Plain integers bumped on the hot path (one attribute increment per query, no lock: the server
runs on one event loop), read by ``DNSServer.metrics``/``metrics_text``. The gauges that
depend on the server's state (in-flight forwards, sandboxes, upstream sockets) are passed in
when the text is rendered, so this module holds no reference to the server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

log = logging.getLogger("nsnet.dns")

UPSTREAM_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
RCODE_NAMES: Final = (
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
    "NXRRSET", "NOTAUTH", "NOTZONE", "DSOTYPENI", "RCODE12", "RCODE13", "RCODE14", "RCODE15",
)  # fmt: skip
FAILURE_REASONS: Final = ("timeout", "error", "servfail", "refused", "busy")
# A bug that fires on every query must not write a traceback per query.
_ERROR_LOG_INTERVAL: Final = 60.0


class ResolverMetrics:
    """What the resolver counted since it started."""

    __slots__ = (
        "dropped",
        "failures",
        "forwarded",
        "hist",
        "hist_sum",
        "internal_errors",
        "last_error_log",
        "queries",
        "queries_tcp",
        "rcodes",
    )

    def __init__(self) -> None:
        self.queries = 0
        self.queries_tcp = 0
        self.dropped = 0
        self.forwarded = 0
        self.internal_errors = 0
        self.rcodes = [0] * 16
        self.failures = dict.fromkeys(FAILURE_REASONS, 0)
        self.hist = [0] * (len(UPSTREAM_BUCKETS) + 1)
        self.hist_sum = 0.0
        self.last_error_log = 0.0

    def observe(self, seconds: float) -> None:
        """One upstream exchange that returned a response, into the latency histogram."""
        self.hist_sum += seconds
        for i, le in enumerate(UPSTREAM_BUCKETS):
            if seconds <= le:
                self.hist[i] += 1
                return
        self.hist[-1] += 1

    def internal_error(self) -> None:
        """Counted always, logged (with the traceback of the exception being handled) at most
        once a minute."""
        self.internal_errors += 1
        now = time.monotonic()
        if now - self.last_error_log > _ERROR_LOG_INTERVAL:
            self.last_error_log = now
            log.exception("resolver: unexpected error while handling a query")

    def as_dict(self, inflight: int, sandboxes: int, pool: dict[str, int]) -> dict[str, int]:
        """Plain counters, for tests and the daemon's own summaries."""
        out = {
            "queries": self.queries,
            "queries_tcp": self.queries_tcp,
            "dropped": self.dropped,
            "forwarded": self.forwarded,
            "internal_errors": self.internal_errors,
            "inflight": inflight,
            "sandboxes": sandboxes,
            **pool,
        }
        for code, count in enumerate(self.rcodes):
            if count:
                out["rcode_" + RCODE_NAMES[code]] = count
        for reason, count in self.failures.items():
            out["upstream_" + reason] = count
        return out

    def text(self, inflight: int, sandboxes: int, upstream_sockets: int) -> str:
        """Prometheus text exposition format (version 0.0.4)."""
        lines: list[str] = []
        metric = _writer(lines)
        metric(
            "nsnet_dns_queries_total", "counter",
            "DNS messages received by the embedded resolver (UDP and TCP).",
            [("", self.queries)],
        )  # fmt: skip
        metric(
            "nsnet_dns_tcp_queries_total", "counter",
            "DNS messages received over TCP.", [("", self.queries_tcp)],
        )  # fmt: skip
        metric(
            "nsnet_dns_responses_total", "counter", "Responses sent, by rcode.",
            [(f'{{rcode="{RCODE_NAMES[c]}"}}', n) for c, n in enumerate(self.rcodes)
             if n or c in (0, 1, 2, 3, 5)],
        )  # fmt: skip
        metric(
            "nsnet_dns_dropped_total", "counter",
            "Messages dropped without a response (no readable header, or not a query).",
            [("", self.dropped)],
        )  # fmt: skip
        metric(
            "nsnet_dns_forwarded_total", "counter",
            "Queries forwarded to upstream servers.", [("", self.forwarded)],
        )  # fmt: skip
        metric(
            "nsnet_dns_upstream_failures_total", "counter",
            "Upstream attempts that failed over to the next server, by reason.",
            [(f'{{reason="{r}"}}', n) for r, n in self.failures.items()],
        )  # fmt: skip
        metric(
            "nsnet_dns_internal_errors_total", "counter",
            "Unexpected errors while handling a query (bugs).", [("", self.internal_errors)],
        )  # fmt: skip
        metric(
            "nsnet_dns_inflight_forwards", "gauge", "Forwarded queries awaiting an upstream.",
            [("", inflight)],
        )  # fmt: skip
        metric("nsnet_dns_sandboxes", "gauge", "Sandboxes served.", [("", sandboxes)])
        metric(
            "nsnet_dns_upstream_sockets", "gauge",
            "UDP sockets open to upstream servers (shared by all forwarded queries).",
            [("", upstream_sockets)],
        )  # fmt: skip
        self._histogram(lines)
        return "\n".join(lines) + "\n"

    def _histogram(self, lines: list[str]) -> None:
        name = "nsnet_dns_upstream_seconds"
        lines.append(f"# HELP {name} Latency of upstream exchanges that returned a response.")
        lines.append(f"# TYPE {name} histogram")
        cumulative = 0
        for le, count in zip(UPSTREAM_BUCKETS, self.hist, strict=False):
            cumulative += count
            lines.append(f'{name}_bucket{{le="{le}"}} {cumulative}')
        cumulative += self.hist[-1]
        lines.append(f'{name}_bucket{{le="+Inf"}} {cumulative}')
        lines.append(f"{name}_sum {self.hist_sum!r}")
        lines.append(f"{name}_count {cumulative}")


def _writer(lines: list[str]) -> Callable[[str, str, str, list[tuple[str, float]]], None]:
    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        for suffix, value in samples:
            text = repr(value) if isinstance(value, float) else str(value)
            lines.append(f"{name}{suffix} {text}")

    return metric
