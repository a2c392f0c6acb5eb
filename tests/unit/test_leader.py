"""The Lease claim rule: when a replica may take, renew or must wait."""

from __future__ import annotations

from qwenfleet.controller.leader import Observed, claim


def test_an_empty_lease_is_taken() -> None:
    spec = claim({}, "a", Observed(), now=0.0, duration=15)
    assert spec is not None and spec["holderIdentity"] == "a" and spec["leaseTransitions"] == 0


def test_a_live_holder_is_respected_until_its_record_stops_changing_for_the_duration() -> None:
    held = {"holderIdentity": "b", "renewTime": "t1", "leaseDurationSeconds": 15}
    seen = Observed()
    seen.update(held, now=100.0)
    assert claim(held, "a", seen, now=110.0, duration=15) is None
    renewed = {**held, "renewTime": "t2"}
    seen.update(renewed, now=114.0)  # the holder renewed: the clock restarts
    assert claim(renewed, "a", seen, now=125.0, duration=15) is None
    taken = claim(renewed, "a", seen, now=129.5, duration=15)
    assert taken is not None and taken["holderIdentity"] == "a" and taken["leaseTransitions"] == 1


def test_the_holder_renews_and_keeps_its_acquire_time() -> None:
    mine = {"holderIdentity": "a", "renewTime": "t1", "acquireTime": "t0", "leaseTransitions": 3}
    spec = claim(mine, "a", Observed(), now=0.0, duration=15)
    assert spec is not None and spec["acquireTime"] == "t0" and spec["leaseTransitions"] == 3


def test_a_released_lease_is_taken_at_once() -> None:
    released = {"holderIdentity": None, "renewTime": "t1", "leaseDurationSeconds": 1}
    seen = Observed()
    seen.update(released, now=50.0)
    spec = claim(released, "a", seen, now=50.0, duration=15)
    assert spec is not None and spec["holderIdentity"] == "a"


def test_skewed_clocks_do_not_matter_only_observed_change_does() -> None:
    far_future = {"holderIdentity": "b", "renewTime": "2999-01-01T00:00:00.000000Z", "leaseDurationSeconds": 15}
    seen = Observed()
    seen.update(far_future, now=0.0)
    assert claim(far_future, "a", seen, now=10.0, duration=15) is None
    assert claim(far_future, "a", seen, now=16.0, duration=15) is not None
