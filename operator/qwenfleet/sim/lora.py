"""vLLM 0.32's LoRA surface as data: the server's LoRA settings, its adapter registry, and the load/unload checks.

Pure apart from reading an adapter folder (its `adapter_config.json` and whether it holds tensors). Every
answer is worded as the real engine words it: checks on the request are 400 `InvalidUserInput`, a path with
no adapter a 404, an adapter the worker refuses (rank above `--max-lora-rank`, no tensors) a 500 whose message
hides the path as `<path>`, as vLLM 0.32 does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path, PurePosixPath
from typing import Any

from qwenfleet.sim.perf import vllm_arg
from qwenfleet.sim.protocol import APIError, FieldError, parse_body, validation_errors

DEFAULT_MAX_LORAS = 1
DEFAULT_MAX_LORA_RANK = 16
TENSOR_FILES = ("adapter_model.safetensors", "adapter_model.bin", "adapter_model.pt")
RUNTIME_UPDATES_ENV = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"


@dataclass(frozen=True)
class LoraConfig:
    """The LoRA flags of one server (`--enable-lora`, `--max-loras`, `--max-lora-rank`, `--lora-modules`) and
    whether the load/unload routes are served (`VLLM_ALLOW_RUNTIME_LORA_UPDATING`)."""

    enabled: bool = False
    max_loras: int = DEFAULT_MAX_LORAS
    max_lora_rank: int = DEFAULT_MAX_LORA_RANK
    modules: tuple[tuple[str, str], ...] = ()
    """Adapters loaded at start, as (name, path)."""
    runtime_updates: bool = False

    @classmethod
    def from_vllm_args(cls, args: list[str], *, runtime_updates: bool = False) -> LoraConfig:
        """Read the LoRA flags of a `vllm serve` command line."""
        modules: list[tuple[str, str]] = []
        for i, arg in enumerate(args):
            if arg == "--lora-modules":
                modules += parse_lora_modules(_values_after(args, i + 1))
            elif arg.startswith("--lora-modules="):
                modules += parse_lora_modules([arg.split("=", 1)[1]])
        return cls(
            enabled="--enable-lora" in args or bool(modules),
            max_loras=int(vllm_arg(args, "--max-loras") or DEFAULT_MAX_LORAS),
            max_lora_rank=int(vllm_arg(args, "--max-lora-rank") or DEFAULT_MAX_LORA_RANK),
            modules=tuple(modules),
            runtime_updates=runtime_updates,
        )


def _values_after(args: list[str], start: int) -> list[str]:
    """The values of a multi-value flag: every argument up to the next flag."""
    out: list[str] = []
    for arg in args[start:]:
        if arg.startswith("--"):
            break
        out.append(arg)
    return out


def parse_lora_modules(values: list[str]) -> list[tuple[str, str]]:
    """vLLM's `--lora-modules` values: `name=path`, or JSON `{"name": ..., "path": ...}`."""
    out: list[tuple[str, str]] = []
    for value in values:
        if value.lstrip().startswith("{"):
            spec = json.loads(value)
            if not isinstance(spec, dict) or not spec.get("name") or not spec.get("path"):
                raise ValueError(f"--lora-modules: {value!r} needs a name and a path")
            out.append((str(spec["name"]), str(spec["path"])))
            continue
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--lora-modules: {value!r} is not NAME=PATH")
        out.append((name, path))
    return out


def runtime_updates_from_env(env: dict[str, str]) -> bool:
    """vLLM's reading of `VLLM_ALLOW_RUNTIME_LORA_UPDATING`: "1" or "true", any case."""
    return env.get(RUNTIME_UPDATES_ENV, "0").strip().lower() in ("1", "true")


def resolve(path: str, path_map: dict[str, Path]) -> Path:
    """Where a path the server is given lives on this machine: the longest matching prefix of `path_map`
    replaced by its directory, else the path itself."""
    pure = PurePosixPath(path)
    for prefix in sorted(path_map, key=len, reverse=True):
        base = PurePosixPath(prefix)
        if pure == base or base in pure.parents:
            return path_map[prefix] / pure.relative_to(base)
    return Path(path)


@dataclass(frozen=True)
class Adapter:
    """One loaded adapter."""

    name: str
    path: str
    rank: int


def _worker_failed(error: str) -> APIError:
    """The 500 of an adapter the engine's worker refuses."""
    return APIError(
        HTTPStatus.INTERNAL_SERVER_ERROR,
        f"Call to add_lora method failed: Worker failed with error '{error}', please check the stack trace above "
        "for the root cause",
    )


def read_adapter(name: str, path: str, *, max_rank: int, path_map: dict[str, Path]) -> Adapter:
    """Check an adapter folder as vLLM's worker does when it loads it; raise the APIError the engine answers."""
    folder = resolve(path, path_map)
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        raise APIError(HTTPStatus.NOT_FOUND, f"Loading lora {name} failed: No adapter found for <path>")
    try:
        config = json.loads(config_file.read_text())
        rank = int(config["r"])
    except (ValueError, KeyError, TypeError) as exc:
        raise _worker_failed(f"invalid adapter_config.json: {exc}") from None
    if rank > max_rank:
        raise _worker_failed(f"LoRA rank {rank} is greater than max_lora_rank {max_rank}.")
    if not any((folder / f).is_file() for f in TENSOR_FILES):
        raise _worker_failed("<path> doesn't contain tensors")
    return Adapter(name, path, rank)


def invalid_input(message: str) -> APIError:
    """vLLM's 400 `InvalidUserInput` of the load/unload checks."""
    return APIError(HTTPStatus.BAD_REQUEST, message, kind="InvalidUserInput")


@dataclass
class AdapterRegistry:
    """The adapters a server serves, in load order, under names distinct from the base model's."""

    base_name: str
    max_rank: int = DEFAULT_MAX_LORA_RANK
    path_map: dict[str, Path] = field(default_factory=dict)
    adapters: dict[str, Adapter] = field(default_factory=dict)

    def __contains__(self, name: object) -> bool:
        return name in self.adapters

    def __iter__(self) -> Iterator[str]:
        return iter(self.adapters)

    def __len__(self) -> int:
        return len(self.adapters)

    def cards(self) -> list[tuple[str, str]]:
        """(name, path) of each adapter, in load order, for /v1/models."""
        return [(a.name, a.path) for a in self.adapters.values()]

    def load(self, name: str, path: str, *, inplace: bool = False) -> str:
        """Load (or with `inplace`, reload) an adapter; the success text, or raise APIError as vLLM does."""
        if not name or not path:
            raise invalid_input("Both 'lora_name' and 'lora_path' must be provided.")
        if name == self.base_name:
            raise invalid_input(f"The lora adapter '{name}' conflicts with a served base model.")
        if not inplace and name in self.adapters:
            raise invalid_input(
                f"The lora adapter '{name}' has already been loaded. If you want to load the adapter in place, "
                "set 'load_inplace' to True."
            )
        self.adapters[name] = read_adapter(name, path, max_rank=self.max_rank, path_map=self.path_map)
        return f"Success: LoRA adapter '{name}' added successfully."

    def unload(self, name: str) -> str:
        """Unload an adapter; the success text, or raise APIError as vLLM does."""
        if not name:
            raise invalid_input("'lora_name' needs to be provided to unload a LoRA adapter.")
        if name not in self.adapters:
            raise APIError(HTTPStatus.NOT_FOUND, f"The lora adapter '{name}' cannot be found.")
        del self.adapters[name]
        return f"Success: LoRA adapter '{name}' removed successfully."


_TRUE = ("1", "on", "t", "true", "y", "yes")
_FALSE = ("0", "off", "f", "false", "n", "no")


def _string(body: dict[str, Any], key: str, errors: list[FieldError]) -> str:
    if key not in body:
        errors.append(("missing", (key,), "Field required", body))
        return ""
    value = body[key]
    if not isinstance(value, str):
        errors.append(("string_type", (key,), "Input should be a valid string", value))
        return ""
    return value


def _flag(body: dict[str, Any], key: str, errors: list[FieldError]) -> bool:
    """A bool field with pydantic's lax parsing (0/1 and yes/no strings pass)."""
    value = body.get(key, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    kind, msg = ("bool_parsing", "Input should be a valid boolean, unable to interpret input")
    if not isinstance(value, str):
        kind, msg = ("bool_type", "Input should be a valid boolean")
    errors.append((kind, (key,), msg, value))
    return False


def parse_load_request(raw: bytes) -> tuple[str, str, bool]:
    """(lora_name, lora_path, load_inplace) of a /v1/load_lora_adapter body, or the 400 vLLM's validation gives."""
    body = parse_body(raw)
    errors: list[FieldError] = []
    name, path = _string(body, "lora_name", errors), _string(body, "lora_path", errors)
    inplace = _flag(body, "load_inplace", errors)
    _flag(body, "is_3d_lora_weight", errors)
    if errors:
        raise validation_errors(errors)
    return name, path, inplace


def parse_unload_request(raw: bytes) -> str:
    """The lora_name of a /v1/unload_lora_adapter body, or the 400 vLLM's validation gives."""
    body = parse_body(raw)
    errors: list[FieldError] = []
    name = _string(body, "lora_name", errors)
    if errors:
        raise validation_errors(errors)
    return name
