"""Fault injection: the failures a connector meets on real networks and servers.

Spec (``healthpipe sandbox --faults ...``): comma-separated ``kind:probability`` items and
``key=value`` settings, e.g. ``429:0.05,503:0.05,reset:0.02,slow:0.02,truncate:0.01,seed=1``.

Kinds:

- ``429`` / ``503`` — the API's own error document with that status and ``Retry-After``
  (in seconds, or about one time in three as an HTTP date); the handler does not run, so
  nothing (a search snapshot, a bulk-export poll) changes on the server.
- ``reset`` — the status line, headers and half of the body, then a TCP reset.
- ``slow`` — the response is held back ``slow_seconds`` before it is sent.
- ``truncate`` — the headers announce the full ``Content-Length`` but the connection is
  closed after half of the body.

Settings: ``seed`` (default 0), ``retry_after`` (seconds, default 1), ``slow_seconds``
(default 1.0). Each data request draws one number from a generator seeded with ``seed``, so
the same sequence of requests meets the same faults. Faults hit data endpoints only (never
sessions or discovery documents), and a request carrying ``X-Sandbox-Faults: off`` neither
meets a fault nor consumes a draw, so test set-up does not shift the sequence.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import TypeVar

FAULT_KINDS = ("429", "503", "reset", "slow", "truncate")
DISABLE_HEADER = "X-Sandbox-Faults"


class FaultSpecError(ValueError):
    """A ``--faults`` spec that does not parse."""


@dataclass(frozen=True)
class FaultConfig:
    rates: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0
    retry_after: int = 1
    slow_seconds: float = 1.0

    def __post_init__(self) -> None:
        for kind, rate in self.rates.items():
            if kind not in FAULT_KINDS:
                raise FaultSpecError(f"unknown fault {kind!r} (known: {', '.join(FAULT_KINDS)})")
            if not 0.0 <= rate <= 1.0:
                raise FaultSpecError(f"fault {kind} has probability {rate}, not in [0, 1]")
        if sum(self.rates.values()) > 1.0 + 1e-9:
            raise FaultSpecError("fault probabilities add up to more than 1")
        if self.retry_after < 0 or self.slow_seconds < 0:
            raise FaultSpecError("retry_after and slow_seconds cannot be negative")

    @classmethod
    def parse(cls, spec: str) -> FaultConfig:
        """Parse ``429:0.05,reset:0.02,seed=1`` (see the module docstring)."""
        rates: dict[str, float] = {}
        settings: dict[str, str] = {}
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            if "=" in item:
                key, _, value = item.partition("=")
                settings[key.strip()] = value.strip()
            elif ":" in item:
                kind, _, value = item.partition(":")
                rates[kind.strip()] = _number(value, kind, float)
            else:
                raise FaultSpecError(f"{item!r} is neither kind:probability nor key=value")
        unknown = set(settings) - {"seed", "retry_after", "slow_seconds"}
        if unknown:
            raise FaultSpecError(f"unknown fault setting(s): {', '.join(sorted(unknown))}")
        return cls(
            rates=rates,
            seed=_number(settings.get("seed", "0"), "seed", int),
            retry_after=_number(settings.get("retry_after", "1"), "retry_after", int),
            slow_seconds=_number(settings.get("slow_seconds", "1.0"), "slow_seconds", float),
        )

    @property
    def active(self) -> bool:
        return any(rate > 0 for rate in self.rates.values())

    def describe(self) -> str:
        rates = ",".join(
            f"{kind}:{self.rates[kind]:g}" for kind in FAULT_KINDS if kind in self.rates
        )
        return f"{rates},seed={self.seed},retry_after={self.retry_after},slow_seconds={self.slow_seconds:g}"


_N = TypeVar("_N", int, float)


def _number(text: str, name: str, kind: type[_N]) -> _N:
    try:
        return kind(text)
    except ValueError:
        raise FaultSpecError(f"{name}: {text!r} is not a number") from None


@dataclass(frozen=True)
class Fault:
    """One drawn fault. ``retry_after`` is the header value for 429/503."""

    kind: str
    retry_after: str | None = None
    slow_seconds: float = 0.0

    @property
    def status(self) -> int | None:
        return int(self.kind) if self.kind in ("429", "503") else None


class FaultInjector:
    """Draws faults from the configured rates, deterministically by seed."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._random = random.Random(config.seed)
        self._lock = threading.Lock()
        self.drawn: dict[str, int] = {kind: 0 for kind in FAULT_KINDS}

    def draw(self) -> Fault | None:
        if not self.config.active:
            return None
        with self._lock:
            roll = self._random.random()
            as_date = self._random.random() < 1 / 3
            chosen = None
            cumulative = 0.0
            for kind in FAULT_KINDS:
                cumulative += self.config.rates.get(kind, 0.0)
                if roll < cumulative:
                    chosen = kind
                    break
            if chosen is None:
                return None
            self.drawn[chosen] += 1
        retry_after = None
        if chosen in ("429", "503"):
            seconds = self.config.retry_after
            # An HTTP date needs the wall clock: the protocol defines it against "now".
            retry_after = (
                formatdate(time.time() + seconds, usegmt=True) if as_date else str(seconds)
            )
        return Fault(chosen, retry_after, self.config.slow_seconds)


def disabled_by(headers: Mapping[str, str]) -> bool:
    return headers.get(DISABLE_HEADER.lower(), "").strip().lower() in ("off", "0", "false", "no")
