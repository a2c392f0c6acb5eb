"""What routing saved: a Qwen3Router's tokens per backend and thinking mode, priced at each backend's realised cost,
beside the same tokens on the largest backend and at a user-supplied reference API price. Pure.

The counterfactual "all on the largest backend" is what the largest backend's GPUs would have cost to serve every
routed token: the replica-hours its plan's throughput needs for those prompt and output tokens, at its hourly
price, plus its own idle floor as it was (what its routed share cost beyond the work at planned throughput). A
backend's realised price (idle time included) is shown for that backend, and never multiplies another backend's
tokens: a large backend that served a few tokens in an idle hour has a realised price in the thousands of USD per
1M tokens, which says nothing about what serving more tokens on it would have cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qwenfleet.api.cost import AdapterCost, BackendCost, ModeCost, RouterCost, RouterCostLedger
from qwenfleet.cost.ledger import counter_delta

Counters = dict[str, float]
"""Token counters keyed `backend/type/mode` (type: prompt, output, reasoning; mode: thinking, non_thinking), and
the LoRA adapters' share of them keyed `ADAPTER_PREFIX + backend/adapter/type` (counted in both)."""
ADAPTER_PREFIX = "adapter:"


def adapter_key(backend: str, adapter: str, kind: str) -> str:
    """The counter key of one adapter's tokens of one type."""
    return f"{ADAPTER_PREFIX}{backend}/{adapter}/{kind}"


@dataclass(frozen=True)
class BackendPrice:
    """One backend's price of an output token (realised when it served, else the planner's estimate), its size,
    the hourly price of one replica, and one replica's planned throughput at load (tokens per second)."""

    usd_per_million_output: float | None
    gpus_per_replica: int
    cost_per_hour_usd: float
    decode_tokens_per_second: float | None = None
    prefill_tokens_per_second: float | None = None
    usd_per_million_input: float | None = None
    """An external API's input price (a Qwen3Deployment's price is per output token, its GPUs' whole cost)."""
    external: bool = False

    def replica_hours(self, prompt_tokens: float, output_tokens: float) -> float | None:
        """Replica-hours this backend needs for these tokens at its planned throughput (None when unplanned)."""
        if not self.decode_tokens_per_second or not self.prefill_tokens_per_second:
            return None
        return (output_tokens / self.decode_tokens_per_second + prompt_tokens / self.prefill_tokens_per_second) / 3600


def advance_counters(
    totals: Counters, seen: Mapping[str, Counters], observed: Mapping[str, Counters | None]
) -> tuple[Counters, dict[str, Counters]]:
    """Totals plus each live pod's counter increase (resets handled); pods not scraped keep their last values."""
    out = dict(totals)
    kept: dict[str, Counters] = {}
    for pod, now in observed.items():
        before = seen.get(pod)
        if now is None:
            if before is not None:
                kept[pod] = dict(before)
            continue
        for key, value in now.items():
            out[key] = out.get(key, 0.0) + counter_delta(None if before is None else before.get(key, 0.0), value)
        kept[pod] = dict(now)
    return out, kept


def _split(totals: Counters) -> dict[tuple[str, str, str], float]:
    parts: dict[tuple[str, str, str], float] = {}
    for key, value in totals.items():
        if key.startswith(ADAPTER_PREFIX):
            continue
        backend, kind, mode = [*key.split("/"), "", "", ""][:3]
        parts[(backend, kind, mode)] = parts.get((backend, kind, mode), 0.0) + value
    return parts


def _usd(tokens: float, rate: float | None) -> float:
    return tokens / 1e6 * rate if rate else 0.0


def _on_largest(price: BackendPrice, prompt: float, output: float, own_prompt: float,
                own_output: float) -> tuple[float, float] | None:  # fmt: skip
    """(replica-hours the largest backend needs for every routed token at its planned throughput, its idle floor in
    USD: its own routed tokens' realised cost beyond the work they needed), or None without a planned throughput."""
    hours = price.replica_hours(prompt, output)
    own_hours = price.replica_hours(own_prompt, own_output)
    if hours is None or own_hours is None:
        return None
    own_cost = _usd(own_output, price.usd_per_million_output)
    return hours, max(0.0, own_cost - own_hours * price.cost_per_hour_usd)


def _adapter_rows(totals: Counters, prices: Mapping[str, BackendPrice], cost: Any, tokens: Any) -> list[AdapterCost]:
    """Each adapter's tokens and its share of its backend's cost (by output tokens, at the backend's price)."""
    parts: dict[tuple[str, str], dict[str, float]] = {}
    for key, value in totals.items():
        if key.startswith(ADAPTER_PREFIX):
            backend, adapter, kind = [*key.removeprefix(ADAPTER_PREFIX).split("/"), "", "", ""][:3]
            row = parts.setdefault((backend, adapter), {})
            row[kind] = row.get(kind, 0.0) + value
    rows = []
    for (backend, adapter), kinds in sorted(parts.items()):
        price = prices.get(backend)
        rate = price.usd_per_million_output if price else None
        usd = _usd(kinds.get("output", 0.0), rate)
        backend_usd = cost(backend)
        rows.append(AdapterCost(backend=backend, adapter=adapter, prompt_tokens=int(kinds.get("prompt", 0)),
                                output_tokens=int(kinds.get("output", 0)), usd=round(usd, 4),
                                backend_share=round(usd / backend_usd, 4) if backend_usd else None))  # fmt: skip
    return rows


def report(
    totals: Counters,
    prices: Mapping[str, BackendPrice],
    reference: Mapping[str, Any] | None,
    pods: Mapping[str, Counters] | None = None,
) -> RouterCost:
    """status.cost of a router: per backend and per mode tokens and USD; on the largest backend; at the reference;
    the counters they come from (`totals`, and each router pod's last `pods`)."""
    parts = _split(totals)
    backends = sorted({b for b, _, _ in parts})
    modes = sorted({m for _, _, m in parts})

    def tokens(backend: str | None = None, kind: str | None = None, mode: str | None = None) -> float:
        wanted = (backend, kind, mode)
        return sum(v for key, v in parts.items() if all(w is None or w == k for w, k in zip(wanted, key, strict=True)))

    def rate(backend: str) -> float | None:
        price = prices.get(backend)
        return price.usd_per_million_output if price else None

    def cost(backend: str, mode: str | None = None) -> float:
        price = prices.get(backend)
        prompt = _usd(tokens(backend, "prompt", mode), price.usd_per_million_input) if price else 0.0
        return _usd(tokens(backend, "output", mode), rate(backend)) + prompt

    rows = []
    for b in backends:
        external = bool(prices.get(b) and prices[b].external) or None
        rows.append(BackendCost(name=b, prompt_tokens=int(tokens(b, "prompt")), output_tokens=int(tokens(b, "output")),
                                reasoning_tokens=int(tokens(b, "reasoning")), usd_per_million_output_tokens=rate(b),
                                usd=round(cost(b), 4), external=external))  # fmt: skip
    usd = sum(cost(b) for b in backends)
    all_output = tokens(kind="output")
    mode_rows = []
    for m in modes:
        m_usd = sum(cost(b, m) for b in backends)
        mode_rows.append(ModeCost(mode=m, prompt_tokens=int(tokens(kind="prompt", mode=m)),
                                  output_tokens=int(tokens(kind="output", mode=m)),
                                  token_share=round((tokens(mode=m) - tokens(kind="reasoning", mode=m))
                                                    / max(1.0, tokens() - tokens(kind="reasoning")), 4),
                                  usd=round(m_usd, 4), cost_share=round(m_usd / usd, 4) if usd else None))  # fmt: skip
    ledger = RouterCostLedger(totals=dict(totals), pods={k: dict(v) for k, v in (pods or {}).items()})
    out = RouterCost(usd=round(usd, 4), backends=rows, modes=mode_rows, ledger=ledger,
                     adapters=_adapter_rows(totals, prices, cost, tokens) or None)  # fmt: skip
    apis = [b for b in prices if prices[b].external]
    if apis:
        out.external_usd = round(sum(cost(b) for b in apis), 4)
    hosted = {n: p for n, p in prices.items() if not p.external}
    if hosted:
        largest = max(hosted, key=lambda n: (hosted[n].gpus_per_replica, hosted[n].cost_per_hour_usd, n))
        out.largest_backend = largest
        on_largest = _on_largest(prices[largest], tokens(kind="prompt"), all_output, tokens(largest, "prompt"),
                                 tokens(largest, "output"))  # fmt: skip
        if on_largest is not None:
            hours, idle = on_largest
            total = hours * prices[largest].cost_per_hour_usd + idle
            out.on_largest_replica_hours, out.largest_idle_usd = round(hours, 6), round(idle, 4)
            out.on_largest_usd, out.saved_vs_largest_usd = round(total, 4), round(total - usd, 4)
    if not reference and apis:  # "all on the API": the first external backend's list prices
        api = prices[apis[0]]
        reference = {"name": f"{apis[0]} (external API)", "inputPerMillionUSD": api.usd_per_million_input or 0.0,
                     "outputPerMillionUSD": api.usd_per_million_output or 0.0}  # fmt: skip
    if reference:
        ref = tokens(kind="prompt") / 1e6 * float(reference.get("inputPerMillionUSD", 0)) + all_output / 1e6 * float(
            reference.get("outputPerMillionUSD", 0)
        )
        out.reference_name, out.reference_usd = str(reference.get("name", "")), round(ref, 4)
        out.saved_vs_reference_usd = round(ref - usd, 4)
    return out
