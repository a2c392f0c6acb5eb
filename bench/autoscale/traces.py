"""Arrival traces for the autoscaling benchmark, generated from a seed (the generator is the record)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DURATION_SECONDS = 3 * 3600


@dataclass(frozen=True)
class Trace:
    """Arrival times (s) with each request's prompt and output tokens."""

    name: str
    arrivals: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray


def _poisson_times(rate: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A non-homogeneous Poisson process from a per-second rate."""
    counts = rng.poisson(rate)
    seconds = np.repeat(np.arange(len(rate)), counts)
    return np.sort(seconds + rng.random(len(seconds)))


def rate_profile(kind: str, peak: float, duration: int = DURATION_SECONDS, seed: int = 0) -> np.ndarray:
    """Requests per second over time for each trace shape (peak = the highest rate)."""
    t = np.arange(duration, dtype=float)
    if kind == "random-bursts":
        return _random_bursts(peak, duration, np.random.default_rng(seed + 7919))
    if kind == "steady":
        return np.full(duration, 0.6 * peak)
    if kind == "diurnal":
        return peak * (0.1 + 0.9 * (0.5 - 0.5 * np.cos(2 * math.pi * t / duration)))
    if kind == "bursty":
        on = ((t // 600) % 3 == 1).astype(float)  # 10 minutes off, 10 on, 10 off, ...
        return peak * on + 0.02 * peak
    if kind == "spike":
        base = np.full(duration, 0.2 * peak)
        base[(t >= duration / 2) & (t < duration / 2 + 900)] = peak
        return base
    raise ValueError(kind)


RANDOM_BURST_GAP_SECONDS = 1200.0
RANDOM_BURST_MEAN_SECONDS = 400.0


def _random_bursts(peak: float, duration: int, rng: np.random.Generator) -> np.ndarray:
    """5% of peak, with bursts whose onsets are a Poisson process (mean gap 20 minutes), durations exponential
    (mean 400 s, 120 s to 900 s) and heights uniform in 50-100% of peak: nothing periodic to learn."""
    rate = np.full(duration, 0.05 * peak)
    onset = rng.exponential(RANDOM_BURST_GAP_SECONDS)
    while onset < duration:
        length = float(np.clip(rng.exponential(RANDOM_BURST_MEAN_SECONDS), 120, 900))
        start, end = int(onset), min(duration, int(onset + length))
        rate[start:end] = np.maximum(rate[start:end], rng.uniform(0.5, 1.0) * peak)
        onset += length + rng.exponential(RANDOM_BURST_GAP_SECONDS)
    return rate


def make_trace(kind: str, peak: float, seed: int) -> Trace:
    """One trace: Poisson arrivals shaped by `kind`, log-normal prompts, geometric outputs."""
    return trace_from_rate(kind, rate_profile(kind, peak, seed=seed), seed)


def trace_from_rate(
    name: str, rate: np.ndarray, seed: int, logged: tuple[np.ndarray, np.ndarray] | None = None
) -> Trace:
    """Poisson arrivals at `rate` (requests per second, second by second); each request's prompt and output
    tokens drawn from the `logged` pairs, else log-normal prompts and geometric outputs (mean 256)."""
    rng = np.random.default_rng(seed)
    arrivals = _poisson_times(rate, rng)
    n = len(arrivals)
    if logged is not None:
        pick = rng.integers(0, len(logged[0]), size=n)
        return Trace(name, arrivals, np.maximum(logged[0][pick], 1), np.maximum(logged[1][pick], 1))
    prompts = np.clip(rng.lognormal(mean=6.5, sigma=0.8, size=n), 16, 16_000).astype(int)
    outputs = np.clip(rng.geometric(1 / 256, size=n), 1, 4096)
    return Trace(name, arrivals, prompts, outputs)


TRACE_KINDS = ("steady", "diurnal", "bursty", "spike", "random-bursts")
