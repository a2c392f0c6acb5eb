"""Recorded request logs as benchmark load shapes (bench/autoscale/recorded.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.autoscale.recorded import rate_shape, read_log, scaled_rate


def test_a_log_with_timestamps_and_tokens(tmp_path: Path) -> None:
    log = tmp_path / "requests.csv"
    log.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2026-03-02 09:00:30.5000000,900,120\n"  # out of order on purpose
        "2026-03-02 09:00:00.0000000,100,10\n"
        "2026-03-02 09:02:10.2500000,50,7\n"
    )
    r = read_log(log)
    assert r.seconds == (0.0, 30.5, 130.25)
    assert r.prompt_tokens == (100, 900, 50) and r.output_tokens == (10, 120, 7)
    assert rate_shape(r) == pytest.approx([2 / 60, 0.0, 1 / 60])  # two in the first minute, one in the third


def test_seconds_without_tokens(tmp_path: Path) -> None:
    log = tmp_path / "arrivals.csv"
    log.write_text("arrival_s\n5\n65\n70\n\n")
    r = read_log(log)
    assert r.seconds == (0.0, 60.0, 65.0) and r.output_tokens == (0, 0, 0)
    shape = rate_shape(r)
    rate = scaled_rate(shape, peak=10.0)
    assert len(rate) == 120 and max(rate) == 10.0 and rate[0] == 5.0  # the busier second minute is the peak


@pytest.mark.parametrize(("text", "reason"), [("prompt,output\n1,2\n", "no arrival-time column"),
                                              ("time,output\n", "no requests")])  # fmt: skip
def test_a_log_it_cannot_read_says_why(tmp_path: Path, text: str, reason: str) -> None:
    log = tmp_path / "bad.csv"
    log.write_text(text)
    with pytest.raises(ValueError, match=reason):
        read_log(log)
