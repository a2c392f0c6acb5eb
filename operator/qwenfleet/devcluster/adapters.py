"""PEFT LoRA adapters for the tiny Qwen3 checkpoint: small random weights the real engine can load.

An adapter is a folder with `adapter_config.json` and `adapter_model.safetensors` (attention projections of
every layer, bf16). The safetensors file is written directly: an 8-byte little-endian header length, the JSON
header, then the raw tensor bytes.
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_TENSORS = "adapter_model.safetensors"


def projection_shapes(config: dict[str, int]) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each attention projection of a Qwen3 config."""
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // int(config["num_attention_heads"]))
    q = int(config["num_attention_heads"]) * head_dim
    kv = int(config["num_key_value_heads"]) * head_dim
    return {"q_proj": (hidden, q), "k_proj": (hidden, kv), "v_proj": (hidden, kv), "o_proj": (q, hidden)}


def bf16_bytes(values: list[float]) -> bytes:
    """Little-endian bfloat16: the top 16 bits of each float32."""
    words = struct.unpack(f"<{len(values)}I", struct.pack(f"<{len(values)}f", *values))
    return struct.pack(f"<{len(words)}H", *(w >> 16 for w in words))


def safetensors_bytes(tensors: dict[str, tuple[list[int], bytes]]) -> bytes:
    """A safetensors file of bf16 tensors given as name -> (shape, raw bytes)."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (tensor_shape, raw) in tensors.items():
        header[name] = {"dtype": "BF16", "shape": tensor_shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(raw for _, raw in tensors.values())


def adapter_config(rank: int, alpha: int, base_model: str) -> dict[str, object]:
    """PEFT's adapter_config.json for a LoRA on the attention projections."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": list(TARGET_MODULES),
        "base_model_name_or_path": base_model,
        "fan_in_fan_out": False,
        "inference_mode": True,
        "modules_to_save": None,
    }


def lora_tensors(config: dict[str, int], rank: int, seed: int) -> dict[str, tuple[list[int], bytes]]:
    """lora_A [r, in] and lora_B [out, r] of every layer's attention projections, small random values."""
    rng = random.Random(seed)
    shapes = projection_shapes(config)
    out: dict[str, tuple[list[int], bytes]] = {}
    for layer in range(int(config["num_hidden_layers"])):
        for module in TARGET_MODULES:
            fan_in, fan_out = shapes[module]
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            for part, dims in (("lora_A", [rank, fan_in]), ("lora_B", [fan_out, rank])):
                values = [rng.gauss(0.0, 0.01) for _ in range(dims[0] * dims[1])]
                out[f"{prefix}.{part}.weight"] = (dims, bf16_bytes(values))
    return out


def write_adapter(
    target: Path,
    *,
    rank: int,
    checkpoint: Path,
    alpha: int | None = None,
    seed: int = 0,
    with_tensors: bool = True,
) -> Path:
    """Write a PEFT LoRA folder for `checkpoint` (its config.json gives the shapes) into `target`; return it.

    `alpha` defaults to twice the rank. Without tensors the folder has only its config (vLLM refuses it)."""
    config = json.loads((checkpoint / "config.json").read_text())
    target.mkdir(parents=True, exist_ok=True)
    body = adapter_config(rank, 2 * rank if alpha is None else alpha, str(checkpoint))
    (target / ADAPTER_CONFIG).write_text(json.dumps(body, indent=2) + "\n")
    if with_tensors:
        (target / ADAPTER_TENSORS).write_bytes(safetensors_bytes(lora_tensors(config, rank, seed)))
    return target
