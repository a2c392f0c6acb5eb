"""The simulator's LoRA surface: flags, the adapter registry, request bodies, the per-batch adapter limit, and the
adapter folders the dev cluster writes."""

from __future__ import annotations

import json
import struct
from http import HTTPStatus
from pathlib import Path

import pytest

from qwenfleet.catalog import ThinkingMode
from qwenfleet.devcluster.adapters import bf16_bytes, projection_shapes, write_adapter
from qwenfleet.sim.engine import Engine, SimRequest
from qwenfleet.sim.lora import (
    AdapterRegistry,
    LoraConfig,
    parse_load_request,
    parse_lora_modules,
    parse_unload_request,
    resolve,
    runtime_updates_from_env,
)
from qwenfleet.sim.perf import PerfModel
from qwenfleet.sim.protocol import APIError, ServedModel, model_card

CONFIG = {"hidden_size": 256, "head_dim": 128, "num_attention_heads": 2, "num_key_value_heads": 1,
          "num_hidden_layers": 2}  # fmt: skip


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CONFIG))
    return folder


def test_flags_are_read_as_vllm_reads_them() -> None:
    args = ["--served-model-name", "m", "--enable-lora", "--max-loras", "2", "--max-lora-rank=32",
            "--lora-modules", "a1=/p/a1", '{"name": "a2", "path": "/p/a2"}', "--port", "8000"]  # fmt: skip
    config = LoraConfig.from_vllm_args(args, runtime_updates=True)
    assert config == LoraConfig(True, 2, 32, (("a1", "/p/a1"), ("a2", "/p/a2")), True)
    assert LoraConfig.from_vllm_args(["--max-num-seqs", "8"]) == LoraConfig()
    with pytest.raises(ValueError, match="NAME=PATH"):
        parse_lora_modules(["a1"])


@pytest.mark.parametrize(("value", "on"), [("True", True), ("1", True), ("true ", True), ("0", False), ("yes", False)])
def test_runtime_updating_follows_vllms_reading_of_the_variable(value: str, on: bool) -> None:
    assert runtime_updates_from_env({"VLLM_ALLOW_RUNTIME_LORA_UPDATING": value}) is on
    assert runtime_updates_from_env({}) is False


def test_paths_resolve_through_the_longest_prefix(tmp_path: Path) -> None:
    mapping = {"/models": tmp_path / "m", "/models/adapters": tmp_path / "a"}
    assert resolve("/models/adapters/x", mapping) == tmp_path / "a" / "x"
    assert resolve("/models/base", mapping) == tmp_path / "m" / "base"
    assert resolve("/modelsx/y", mapping) == Path("/modelsx/y")


def _registry(checkpoint: Path, tmp_path: Path) -> AdapterRegistry:
    write_adapter(tmp_path / "host" / "a2", rank=8, checkpoint=checkpoint)
    write_adapter(tmp_path / "host" / "big", rank=32, checkpoint=checkpoint)
    write_adapter(tmp_path / "host" / "empty", rank=8, checkpoint=checkpoint, with_tensors=False)
    return AdapterRegistry("base", 16, {"/adapters": tmp_path / "host"})


def _refusal(registry: AdapterRegistry, name: str, path: str) -> APIError:
    with pytest.raises(APIError) as caught:
        registry.load(name, path)
    return caught.value


def test_the_registry_loads_and_unloads_with_vllms_answers(checkpoint: Path, tmp_path: Path) -> None:
    registry = _registry(checkpoint, tmp_path)
    assert registry.load("a2", "/adapters/a2") == "Success: LoRA adapter 'a2' added successfully."
    assert "a2" in registry and registry.cards() == [("a2", "/adapters/a2")]
    again = _refusal(registry, "a2", "/adapters/a2")
    assert (again.status, again.type) == (HTTPStatus.BAD_REQUEST, "InvalidUserInput")
    assert "set 'load_inplace' to True" in again.message
    assert registry.load("a2", "/adapters/a2", inplace=True).startswith("Success")
    base = _refusal(registry, "base", "/adapters/a2")
    assert base.message == "The lora adapter 'base' conflicts with a served base model."
    big = _refusal(registry, "big", "/adapters/big")
    assert big.status == HTTPStatus.INTERNAL_SERVER_ERROR and big.type == "InternalServerError"
    assert "'LoRA rank 32 is greater than max_lora_rank 16.'" in big.message
    empty = _refusal(registry, "e", "/adapters/empty")
    assert "'<path> doesn't contain tensors'" in empty.message
    ghost = _refusal(registry, "ghost", "/adapters/ghost")
    assert (ghost.status, ghost.message) == (
        HTTPStatus.NOT_FOUND,
        "Loading lora ghost failed: No adapter found for <path>",
    )
    assert _refusal(registry, "", "/x").message == "Both 'lora_name' and 'lora_path' must be provided."
    assert registry.unload("a2") == "Success: LoRA adapter 'a2' removed successfully."
    with pytest.raises(APIError) as caught:
        registry.unload("a2")
    assert (
        caught.value.status == HTTPStatus.NOT_FOUND and caught.value.message == "The lora adapter 'a2' cannot be found."
    )


def test_request_bodies_are_validated_like_fastapi() -> None:
    assert parse_load_request(b'{"lora_name": "a", "lora_path": "/p", "load_inplace": true}') == ("a", "/p", True)
    with pytest.raises(APIError) as caught:
        parse_load_request(b"{}")
    assert caught.value.message.startswith("2 validation errors:\n  {'type': 'missing', 'loc': 'body.lora_name'")
    assert caught.value.param == "body.lora_name" and caught.value.type == "Bad Request"
    with pytest.raises(APIError) as caught:
        parse_load_request(b'{"lora_name": 1, "lora_path": "/p"}')
    assert "'type': 'string_type'" in caught.value.message and caught.value.message.startswith("1 validation error:")
    assert parse_unload_request(b'{"lora_name": "a"}') == "a"


def test_the_models_list_puts_adapters_after_the_base_model() -> None:
    served = ServedModel("base", "org/base", 4096, ThinkingMode.HYBRID, think_by_default=True)
    cards = model_card(served, 5, [("a1", "/p/a1")])["data"]
    assert [c["id"] for c in cards] == ["base", "a1"]
    assert (cards[1]["parent"], cards[1]["root"], cards[1]["max_model_len"]) == ("base", "/p/a1", None)
    assert set(cards[0]) == set(cards[1]) and set(cards[0]["permission"][0]) == set(cards[1]["permission"][0])


def test_a_batch_runs_at_most_max_loras_adapters() -> None:
    perf = PerfModel(max_num_seqs=8, kv_tokens=4096, max_model_len=2048, weight_seconds=0.02,
                     kv_seconds_per_token=1e-6, prefill_tokens_per_second=10_000)  # fmt: skip
    engine = Engine(perf, max_loras=1)
    for rid, lora in (("x", "a1"), ("y", "a2"), ("z", "a1"), ("w", None)):
        engine.add_request(SimRequest(id=rid, prompt_tokens=4, output_tokens=4, lora=lora))
    engine.step(0.0)
    assert [r.id for r in engine.running] == ["x", "z", "w"] and [r.id for r in engine.waiting] == ["y"]


def test_written_adapters_have_peft_shapes_in_bf16(checkpoint: Path, tmp_path: Path) -> None:
    folder = write_adapter(tmp_path / "a", rank=4, checkpoint=checkpoint, seed=3)
    config = json.loads((folder / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 4, 8)
    raw = (folder / "adapter_model.safetensors").read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + size])
    q_b = header["base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"]
    k_a = header["base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"]
    assert (q_b["dtype"], q_b["shape"], k_a["shape"]) == ("BF16", [256, 4], [4, 256])
    tensors = [v for k, v in header.items() if k != "__metadata__"]
    assert len(tensors) == 2 * 4 * 2 and max(t["data_offsets"][1] for t in tensors) == len(raw) - 8 - size
    assert projection_shapes(CONFIG)["k_proj"] == (256, 128)
    assert bf16_bytes([1.0, -2.0]) == b"\x80\x3f\x00\xc0"
    assert not (write_adapter(tmp_path / "n", rank=4, checkpoint=checkpoint, with_tensors=False)
                / "adapter_model.safetensors").exists()  # fmt: skip
