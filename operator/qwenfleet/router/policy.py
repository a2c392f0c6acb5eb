"""Routing policy: which backend (model size) and which replica serves a request. Pure.

- An alias names its backend. `model: auto` (or the router's default) walks the ordered rules; no match
  means the default backend.
- Spillover: when the target's waiting requests per ready replica pass its threshold and the alternate has
  headroom, the alternate serves. Fallback: when the target has no ready replica and its fallback has one.
- Within a backend: power of two choices on outstanding requests plus scraped queue depth. With prefix
  affinity, the router remembers which replicas recently served each leading prompt (their prefix caches hold
  it) and sends the prefix to the least loaded of them that is under `load_bound` x the mean load; when none
  is, the least loaded replica becomes a new holder, so a hot prefix spreads over as many replicas as its load
  needs. (Outstanding counts are this router's own and exact, so no random sampling is needed there.)
"""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from dataclasses import dataclass, field

from qwenfleet.api.router import Qwen3RouterSpec, RuleMatch

AUTO = "auto"


@dataclass(frozen=True)
class RouteRequest:
    """What the policy reads from a request."""

    model: str
    thinking: bool = False
    tools: bool = False
    prompt_tokens: int = 0
    max_tokens: int | None = None
    tier: str | None = None
    prefix: str = ""


@dataclass
class Replica:
    """One ready pod of a backend, with its live load."""

    id: str
    address: str
    outstanding: int = 0
    waiting: float = 0.0

    @property
    def load(self) -> float:
        """Requests this router has in flight there plus the pod's own queue."""
        return self.outstanding + self.waiting


@dataclass
class BackendState:
    """The live view of one backend: its served model name and ready replicas."""

    name: str
    served_model: str = ""
    replicas: list[Replica] = field(default_factory=list)

    @property
    def queue_per_replica(self) -> float:
        """Waiting requests per ready replica (infinite with none ready)."""
        if not self.replicas:
            return float("inf")
        return sum(r.waiting for r in self.replicas) / len(self.replicas)


@dataclass(frozen=True)
class Route:
    """The decision: backend, why, and the model name to send upstream."""

    backend: str
    reason: str


class UnknownModel(LookupError):
    """The requested model is neither an alias, a served model name, nor auto."""


def model_names(spec: Qwen3RouterSpec, states: dict[str, BackendState]) -> dict[str, str]:
    """Every name a client may ask for -> its backend."""
    names = {AUTO: ""}
    for backend in spec.backends:
        served = states.get(backend.name)
        if served and served.served_model:
            names[served.served_model] = backend.name
        names[backend.name] = backend.name
        for alias in backend.aliases:
            names[alias] = backend.name
    return names


def _matches(req: RouteRequest, m: RuleMatch) -> bool:
    """Every condition the rule sets holds for the request."""
    return all(
        (
            m.thinking is None or req.thinking == m.thinking,
            m.tools is None or req.tools == m.tools,
            m.min_prompt_tokens is None or req.prompt_tokens >= m.min_prompt_tokens,
            m.max_prompt_tokens is None or req.prompt_tokens <= m.max_prompt_tokens,
            m.min_max_tokens is None or (req.max_tokens or 0) >= m.min_max_tokens,
            m.tier is None or req.tier == m.tier,
        )
    )


def choose_backend(req: RouteRequest, spec: Qwen3RouterSpec, states: dict[str, BackendState]) -> Route:
    """The backend for a request, after rules, spillover and fallback."""
    names = model_names(spec, states)
    if req.model not in names:
        raise UnknownModel(req.model)
    if req.model == AUTO:
        rule = next((r for r in spec.rules if _matches(req, r.match)), None)
        target, reason = (rule.backend, f"rule:{rule.name}") if rule else (spec.default_backend, "default")
    else:
        target, reason = names[req.model], "alias"
    backend = next(b for b in spec.backends if b.name == target)
    state = states.get(target) or BackendState(target)
    if not state.replicas and backend.fallback:
        fallback = states.get(backend.fallback)
        if fallback and fallback.replicas:
            return Route(backend.fallback, f"{reason}>fallback")
    if backend.spillover_to and state.replicas and state.queue_per_replica > backend.spillover_queue_per_replica:
        alternate = states.get(backend.spillover_to)
        if alternate and alternate.replicas and alternate.queue_per_replica < backend.spillover_queue_per_replica:
            return Route(backend.spillover_to, f"{reason}>spillover")
    return Route(target, reason)


def prefix_key(text: str, chars: int) -> int:
    """A stable hash of the leading prompt text."""
    return int.from_bytes(hashlib.blake2b(text[:chars].encode(), digest_size=8).digest(), "big")


class PrefixHomes:
    """Which replicas recently served each prompt prefix: a bounded LRU of prefix hash -> replica ids."""

    def __init__(self, max_prefixes: int = 16384, max_homes: int = 4) -> None:
        self.max_prefixes = max_prefixes
        self.max_homes = max_homes
        self._homes: OrderedDict[int, list[str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._homes)

    def get(self, key: int) -> list[str]:
        """The replicas that served `key`, most recent last."""
        return self._homes.get(key, [])

    def record(self, key: int, replica_id: str) -> None:
        """`replica_id` served `key` just now."""
        others = [h for h in self._homes.pop(key, []) if h != replica_id]
        self._homes[key] = [*others[max(0, len(others) - self.max_homes + 1) :], replica_id]
        while len(self._homes) > self.max_prefixes:
            self._homes.popitem(last=False)


def _least_of_two(candidates: list[Replica], rng: random.Random) -> Replica:
    if len(candidates) == 1:
        return candidates[0]
    a, b = rng.sample(candidates, 2)
    return a if a.load <= b.load else b


def choose_replica(
    state: BackendState,
    rng: random.Random,
    *,
    prefix: str = "",
    prefix_chars: int = 0,
    homes: PrefixHomes | None = None,
    load_bound: float = 2.0,
    exclude: frozenset[str] = frozenset(),
) -> Replica | None:
    """Least load of two random replicas; with prefix affinity, the least loaded replica holding the prefix
    unless it is above the load bound, else the least loaded replica (which becomes a holder)."""
    candidates = [r for r in state.replicas if r.id not in exclude]
    if not candidates:
        return None
    if not (prefix and prefix_chars and homes is not None):
        return _least_of_two(candidates, rng)
    key = prefix_key(prefix, prefix_chars)
    held = set(homes.get(key))
    mean = sum(r.load for r in candidates) / len(candidates)
    warm = [r for r in candidates if r.id in held and r.load <= load_bound * mean + 1]
    choice = min(warm or candidates, key=lambda r: r.load)
    homes.record(key, choice.id)
    return choice
