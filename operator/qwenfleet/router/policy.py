"""Routing policy: which backend (model size) and which replica serves a request. Pure.

`decide` makes the whole decision for one request from the live state, and the proxy only carries it out:

- The target: an alias, a backend's name or its served model name names its backend; `model: auto` walks the
  ordered rules, no match means the default backend.
- Target ready: it serves, unless its queue per ready replica passes `spilloverQueuePerReplica` and the
  spillover alternate is below it (then the alternate serves). A replica's queue is the larger of its scraped
  `vllm:num_requests_waiting` and this router's in-flight requests beyond the replica's capacity (the plan's
  `referenceConcurrency`, what the autoscaler sizes on), so a burst that arrives between two scrapes spills at
  once.
- Target with no ready replica (at zero, or starting): with scale from zero on it is woken (every time; discovery
  rate-limits the annotation, and it also marks a starting backend busy so it is not scaled back to
  zero as idle). Meanwhile its fallback serves if that has a ready replica; else the request is held until
  the target is ready (up to `holdSeconds`; at most `maxHeldRequests` per backend, beyond that 429). With scale
  from zero off and no ready fallback: 503 at once.
- Target whose Qwen3Deployment does not exist: the fallback serves if ready; else a clear 503 at once.
- An external API backend is always ready, up to its concurrency limit (then a request naming it gets 429). As a
  spillover or fallback alternate it is chosen only below that limit and while the router's daily budget for the
  APIs lasts; a request that names it (alias, rule) is served past the budget, since someone chose it.
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

from qwenfleet.api.router import Backend, Qwen3RouterSpec, RuleMatch

AUTO = "auto"
RETRY_AFTER_SECONDS = 10
"""Retry-After of a 429 when too many requests are held for a backend."""


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
    capacity: int | None = None
    """Sequences the replica runs at once (the plan's referenceConcurrency); None when unknown."""
    served_model: str = ""
    """The model name this pod serves (from its own plan: during a rollout old and new pods differ)."""
    confirmed: bool = False
    """The server at `address` listed `served_model` in its /v1/models: it is this pod's, not a stale one."""
    adapters: frozenset[str] = frozenset()
    """The LoRA adapters loaded there (from its /v1/models)."""

    @property
    def load(self) -> float:
        """Requests this router has in flight there plus the pod's own queue."""
        return self.outstanding + self.waiting

    @property
    def queued(self) -> float:
        """Requests waiting at the replica: the scraped queue, or this router's in-flight requests beyond the
        replica's capacity when that is more (the scrape lags a burst)."""
        if self.capacity is None:
            return self.waiting
        return max(self.waiting, float(self.outstanding - self.capacity))


@dataclass
class BackendState:
    """The live view of one backend: does its Qwen3Deployment exist, its served model name, its ready replicas,
    the replicas it wants (more than zero with none ready means starting) and the requests held for it."""

    name: str
    served_model: str = ""
    replicas: list[Replica] = field(default_factory=list)
    exists: bool = True
    desired: int = 0
    held: int = 0
    external: bool = False
    """An external API: one pseudo-replica whose capacity is its concurrency limit."""
    over_budget: bool = False
    """The router's daily budget for the external APIs is spent."""
    adapters: tuple[str, ...] = ()
    """The LoRA adapters its Qwen3Deployment declares (each a model name that reaches this backend)."""

    @property
    def full(self) -> bool:
        """An external API at its concurrency limit."""
        return self.external and all(r.capacity is not None and r.outstanding >= r.capacity for r in self.replicas)

    def takes_overflow(self, threshold: float | None = None) -> bool:
        """Whether it may take requests meant for another backend (spillover below `threshold`, or fallback)."""
        if self.external:
            return self.exists and bool(self.replicas) and not self.full and not self.over_budget
        if not (self.exists and self.replicas):
            return False
        return threshold is None or self.queue_per_replica < threshold

    @property
    def queue_per_replica(self) -> float:
        """Waiting requests per ready replica (infinite with none ready)."""
        if not self.replicas:
            return float("inf")
        return sum(r.queued for r in self.replicas) / len(self.replicas)

    @property
    def phase(self) -> str:
        """missing, ready, starting or zero."""
        if not self.exists:
            return "missing"
        if self.replicas:
            return "ready"
        return "starting" if self.desired > 0 else "zero"


@dataclass(frozen=True)
class Refusal:
    """An answer given at once instead of serving."""

    status: int
    message: str
    retry_after: int | None = None


@dataclass(frozen=True)
class Route:
    """The decision for one request.

    `target` is the backend the request is for; `backend` serves it (the target, its spillover alternate, or
    its fallback meanwhile); `reason` is the path taken (shown in x-qwenfleet-route). `wake`: ask the operator
    to scale the target from zero. `hold`: wait for the target to have a ready replica, then decide again.
    `meanwhile`: the fallback serving while the target has no ready replica. `refusal`: answer with that error.
    """

    backend: str
    reason: str
    target: str = ""
    wake: bool = False
    hold: bool = False
    meanwhile: str | None = None
    refusal: Refusal | None = None
    adapter: str | None = None
    """The LoRA adapter asked for: only replicas that have it loaded serve, under its own name."""


class UnknownModel(LookupError):
    """The requested model is neither an alias, a backend name, a served model name, nor auto."""


def model_names(spec: Qwen3RouterSpec, states: dict[str, BackendState]) -> dict[str, str]:
    """Every name a client may ask for -> its backend. A backend's name and its served model name always reach
    it: an alias equal to another backend's served model name does not take that name over."""
    names = {AUTO: ""}
    for backend in spec.backends:
        for alias in backend.aliases:
            names[alias] = backend.name
    for backend in spec.backends:
        served = states.get(backend.name)
        for adapter in served.adapters if served and served.exists else ():
            names[adapter] = backend.name
    for backend in spec.backends:
        served = states.get(backend.name)
        if served and served.exists and served.served_model:
            names[served.served_model] = backend.name
    for backend in spec.backends:
        names[backend.name] = backend.name
    return names


def adapter_of(model: str, state: BackendState) -> str | None:
    """The adapter a request names on its backend, or None for the base model."""
    return model if model in state.adapters and model != state.served_model else None


def name_clashes(spec: Qwen3RouterSpec, states: dict[str, BackendState]) -> list[str]:
    """Aliases that another backend's served model name shadows (admission cannot know served names)."""
    served = {s.served_model: s.name for s in states.values() if s.exists and s.served_model}
    return [
        f"alias {alias!r} of {b.name} is the served model name of {served[alias]}"
        for b in spec.backends
        for alias in b.aliases
        if alias in served and served[alias] != b.name
    ]


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


def _target(req: RouteRequest, spec: Qwen3RouterSpec, states: dict[str, BackendState]) -> tuple[str, str, str | None]:
    """(backend, reason, the LoRA adapter asked for or None)."""
    names = model_names(spec, states)
    if req.model not in names:
        raise UnknownModel(req.model)
    if req.model != AUTO:
        backend = names[req.model]
        return backend, "alias", adapter_of(req.model, states.get(backend) or BackendState(backend))
    rule = next((r for r in spec.rules if _matches(req, r.match)), None)
    return (rule.backend, f"rule:{rule.name}", rule.adapter) if rule else (spec.default_backend, "default", None)


def _spillover(backend: Backend, state: BackendState, states: dict[str, BackendState]) -> str | None:
    """The alternate that takes the request when the target is over its threshold and the alternate is under."""
    threshold = backend.spillover_queue_per_replica
    if not backend.spillover_to or state.queue_per_replica <= threshold:
        return None
    alternate = states.get(backend.spillover_to)
    if alternate and alternate.takes_overflow(threshold):
        return alternate.name
    return None


def decide(
    req: RouteRequest, spec: Qwen3RouterSpec, states: dict[str, BackendState], *, already_held: bool = False
) -> Route:
    """The whole decision for a request: who serves it now, whether to wake the target, whether to hold it.

    `already_held` is true when the proxy asks again for a request it holds (it counts among `held` already).
    Raises UnknownModel for a name no backend answers to.
    """
    target, reason, adapter = _target(req, spec, states)
    backend = next(b for b in spec.backends if b.name == target)
    state = states.get(target) or BackendState(target)
    if state.external and state.full:
        message = f"backend {target} (an external API) is at its concurrency limit; retry later"
        return Route(target, reason, target, refusal=Refusal(429, message, retry_after=RETRY_AFTER_SECONDS))
    if adapter is not None and state.phase == "ready":  # only this backend's replicas serve its adapter
        if adapter not in state.adapters:
            message = f"adapter {adapter} is not in spec.adapters of the Qwen3Deployment {target}"
            return Route(target, f"{reason}>adapter", target, refusal=Refusal(503, message))
        if not any(adapter in r.adapters for r in state.replicas):
            message = f"adapter {adapter} is not loaded on a ready replica of {target} yet; retry shortly"
            return Route(target, f"{reason}>adapter", target, refusal=Refusal(503, message, retry_after=5))
        return Route(target, f"{reason}>adapter", target, adapter=adapter)
    if state.phase == "ready":
        alternate = _spillover(backend, state, states)
        if alternate:
            return Route(alternate, f"{reason}>spillover", target)
        return Route(target, reason, target)
    fallback = states.get(backend.fallback) if backend.fallback and adapter is None else None
    fallback_ready = fallback is not None and fallback.takes_overflow()
    if state.phase == "missing":
        if fallback is not None and fallback_ready:
            return Route(fallback.name, f"{reason}>missing>fallback", target, meanwhile=fallback.name)
        message = f"backend {target}: its Qwen3Deployment {target} does not exist (check the Qwen3Router's backends)"
        return Route(target, f"{reason}>missing", target, refusal=Refusal(503, message))
    wake = spec.scale_from_zero.enabled
    if fallback is not None and fallback_ready:
        why = f"{reason}>wake>fallback" if wake else f"{reason}>fallback"
        return Route(fallback.name, why, target, wake=wake, meanwhile=fallback.name)
    if not wake:
        why = "is at zero replicas" if state.phase == "zero" else "has no ready replica yet"
        message = f"backend {target} {why} and scale from zero is disabled"
        return Route(target, reason, target, refusal=Refusal(503, message))
    if not already_held and state.held >= spec.scale_from_zero.max_held_requests:
        message = f"backend {target} is starting and already holds {state.held} requests; retry later"
        return Route(target, f"{reason}>wake", target, wake=True,
                     refusal=Refusal(429, message, retry_after=RETRY_AFTER_SECONDS))  # fmt: skip
    return Route(target, f"{reason}>wake", target, wake=True, hold=True)


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
    adapter: str | None = None,
) -> Replica | None:
    """Least load of two random replicas; with prefix affinity, the least loaded replica holding the prefix
    unless it is above the load bound, else the least loaded replica (which becomes a holder). With `adapter`,
    only replicas that have it loaded."""
    candidates = [r for r in state.replicas if r.id not in exclude and (adapter is None or adapter in r.adapters)]
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


def upstream_model(route: Route, replica: Replica, state: BackendState, requested: str) -> str:
    """The model name sent to the replica: the adapter's own, else the base model that pod serves."""
    if route.adapter is not None:
        return route.adapter
    return replica.served_model or state.served_model or requested
