"""Recorded request logs as load shapes for the autoscaling benchmark (`python -m bench.autoscale.replay`).

A log is a CSV file with a header row: a column of arrival times (its name says timestamp, time or arrival;
ISO 8601 date-times or seconds), and optionally each request's prompt and output tokens (names that say
context, prompt or input, and generated, output or completion).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

TIME_NAMES = ("timestamp", "time", "arrival")
PROMPT_NAMES = ("context", "prompt", "input")
OUTPUT_NAMES = ("generated", "output", "completion")


@dataclass(frozen=True)
class RecordedLog:
    """Arrival offsets in seconds from the first request (sorted), with each request's tokens (0: not logged)."""

    seconds: tuple[float, ...]
    prompt_tokens: tuple[int, ...]
    output_tokens: tuple[int, ...]


def _column(header: list[str], names: tuple[str, ...]) -> int | None:
    return next((i for i, h in enumerate(header) if any(n in h.strip().lower() for n in names)), None)


def _seconds(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return datetime.fromisoformat(value.strip()).timestamp()


def read_log(path: Path) -> RecordedLog:
    """The requests of a CSV log; ValueError with the reason when it has no time column or no request."""
    with path.open(newline="") as f:
        rows = csv.reader(f)
        header = next(rows, [])
        at = _column(header, TIME_NAMES)
        if at is None:
            raise ValueError(f"{path}: no arrival-time column (a header naming timestamp, time or arrival)")
        prompt, output = _column(header, PROMPT_NAMES), _column(header, OUTPUT_NAMES)

        def tokens(row: list[str], column: int | None) -> int:
            return int(float(row[column])) if column is not None and row[column].strip() else 0

        records = sorted((_seconds(r[at]), tokens(r, prompt), tokens(r, output)) for r in rows if r)
    if not records:
        raise ValueError(f"{path}: no requests")
    start = records[0][0]
    return RecordedLog(tuple(t - start for t, _, _ in records), tuple(p for _, p, _ in records),
                       tuple(o for _, _, o in records))  # fmt: skip


def rate_shape(log: RecordedLog, bucket_seconds: float = 60.0) -> list[float]:
    """Arrivals per second in each `bucket_seconds` of the log, from its first request to its last."""
    buckets = [0.0] * (math.floor(log.seconds[-1] / bucket_seconds) + 1)
    for t in log.seconds:
        buckets[math.floor(t / bucket_seconds)] += 1.0 / bucket_seconds
    return buckets


def scaled_rate(shape: list[float], peak: float, bucket_seconds: float = 60.0) -> list[float]:
    """Requests per second, second by second, following `shape` with its busiest bucket at `peak`."""
    top = max(shape)
    if top <= 0:
        raise ValueError("the log has no arrivals to take a shape from")
    return [peak * value / top for value in shape for _ in range(int(bucket_seconds))]
