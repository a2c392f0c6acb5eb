"""When the cost loop writes status.cost and status.slo: on activity every 30 s at most, when idle every 5 minutes,
never unchanged."""

from __future__ import annotations

from typing import Any

from qwenfleet.api.deployment import Qwen3DeploymentSpec, slo_objective
from qwenfleet.cost.loop import IDLE_WRITE_EVERY_SECONDS, WRITE_EVERY_SECONDS, write_due


def _record(gpu_hours: float, output: int, pods: tuple[str, ...] = ("a",), slo: Any = None) -> dict[str, Any]:
    cost = {"sinceCreation": {"gpuHours": gpu_hours, "promptTokens": 10 if output else 0, "outputTokens": output},
            "ledger": {"pods": [{"name": p} for p in pods]}}  # fmt: skip
    return {"cost": cost, "slo": slo}


def test_the_first_record_is_written_at_once() -> None:
    assert write_due(_record(0.0, 0), {}, 0.0)  # a pod holds GPUs
    assert write_due(_record(0.1, 0, ()), {}, 0.0)  # GPU time from a pod already gone


def test_a_deployment_that_never_held_a_gpu_has_nothing_to_write() -> None:
    assert not write_due(_record(0.0, 0, ()), {}, 1e6)
    assert not write_due(_record(0.0, 0, (), slo={"ttftSeconds": 2.5}), {}, 1e6)  # an objective alone is not news


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


def test_a_new_attainment_is_written_with_the_activity_that_moved_it() -> None:
    old = _record(1.0, 100, slo={"lastHour": {"attainment": 0.99}})
    new = _record(1.1, 200, slo={"lastHour": {"attainment": 0.98}})
    assert not write_due(new, old, WRITE_EVERY_SECONDS - 1)  # the same cadence: no write of its own
    assert write_due(new, old, WRITE_EVERY_SECONDS)
    # an objective set, changed or removed is shown at the next write interval, not the idle one
    assert write_due(_record(1.1, 100), _record(1.0, 100, slo={"ttftSeconds": 2.5}), WRITE_EVERY_SECONDS)
    assert write_due(_record(1.1, 100, slo={"ttftSeconds": 1.0}), _record(1.0, 100), WRITE_EVERY_SECONDS)
    assert not write_due(_record(1.1, 100, slo={"ttftSeconds": 1.0}), _record(1.0, 100), WRITE_EVERY_SECONDS - 1)


def test_the_objective_is_read_from_the_spec_with_the_api_models_default() -> None:
    assert slo_objective({"spec": {"autoscaling": {"mode": "builtin"}}}) is None
    assert slo_objective({"spec": {"autoscaling": {"slo": {"ttftSeconds": 1.0, "attainment": 0.9}}}}) == (1.0, 0.9)
    spec = Qwen3DeploymentSpec.model_validate({"model": "Qwen3-8B", "gpu": "L4-24GB", "autoscaling": {
        "mode": "builtin", "slo": {"ttftSeconds": 2.5}}})  # fmt: skip
    assert spec.autoscaling is not None and spec.autoscaling.slo is not None
    assert slo_objective({"spec": {"autoscaling": {"slo": {"ttftSeconds": 2.5}}}}) == (
        2.5,
        spec.autoscaling.slo.attainment,
    )
