"""When the cost loop writes status.cost: on activity every 30 s at most, when idle every 5 minutes, never unchanged."""

from __future__ import annotations

from typing import Any

from qwenfleet.cost.loop import IDLE_WRITE_EVERY_SECONDS, WRITE_EVERY_SECONDS, write_due


def _record(gpu_hours: float, output: int, pods: tuple[str, ...] = ("a",)) -> dict[str, Any]:
    return {"sinceCreation": {"gpuHours": gpu_hours, "promptTokens": 10 if output else 0, "outputTokens": output},
            "ledger": {"pods": [{"name": p} for p in pods]}}  # fmt: skip


def test_the_first_record_is_written_at_once() -> None:
    assert write_due(_record(0.0, 0), {}, 0.0)  # a pod holds GPUs
    assert write_due(_record(0.1, 0, ()), {}, 0.0)  # GPU time from a pod already gone


def test_a_deployment_that_never_held_a_gpu_has_nothing_to_write() -> None:
    assert not write_due(_record(0.0, 0, ()), {}, 1e6)


def test_serving_writes_at_most_every_write_interval() -> None:
    old = _record(1.0, 100)
    assert not write_due(_record(1.1, 200), old, WRITE_EVERY_SECONDS - 1)
    assert write_due(_record(1.1, 200), old, WRITE_EVERY_SECONDS)


def test_a_changed_replica_set_counts_as_activity() -> None:
    assert write_due(_record(1.1, 100, ("a", "b")), _record(1.0, 100), WRITE_EVERY_SECONDS)


def test_only_the_clock_moved_writes_at_the_idle_interval() -> None:
    old = _record(1.0, 100)
    assert not write_due(_record(1.1, 100), old, WRITE_EVERY_SECONDS)
    assert not write_due(_record(1.1, 100), old, IDLE_WRITE_EVERY_SECONDS - 1)
    assert write_due(_record(1.1, 100), old, IDLE_WRITE_EVERY_SECONDS)


def test_nothing_changed_is_never_written() -> None:
    assert not write_due(_record(1.0, 100), _record(1.0, 100), 10 * IDLE_WRITE_EVERY_SECONDS)
