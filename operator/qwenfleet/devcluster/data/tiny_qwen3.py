"""Writes a tiny random-weight Qwen3 checkpoint that the real vLLM engine loads with no hub access.

Run by the engine's own interpreter (it needs torch, transformers and tokenizers, which the project's
virtualenv does not carry): `python tiny_qwen3.py OUT_DIR`. The weights are random; the architecture
(`Qwen3ForCausalLM`), the special tokens and the chat template are Qwen3's, so vLLM's protocol, reasoning and
tool parsers, batching, metrics and lifecycle all run for real.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
]

# Qwen3's conversation format: system (with the tools block), user, assistant (tool calls in hermes
# <tool_call> tags), tool results, and `enable_thinking` (false closes an empty think block up front).
CHAT_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n"
    "{%- if messages[0].role == 'system' %}{{ messages[0].content }}\n\n{%- endif %}"
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
    "{%- for tool in tools %}\n{{ tool | tojson }}{%- endfor %}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
    "{%- elif messages[0].role == 'system' %}<|im_start|>system\n{{ messages[0].content }}<|im_end|>\n"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}"
    "<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n"
    "{%- elif message.role == 'assistant' %}<|im_start|>assistant\n"
    "{%- if message.content is string %}{{ message.content }}{%- endif %}"
    "{%- for call in message.tool_calls or [] %}"
    "{%- set fn = call.function if call.function is defined else call %}"
    '\n<tool_call>\n{"name": "{{ fn.name }}", "arguments": '
    "{%- if fn.arguments is string %}{{ fn.arguments }}{%- else %}{{ fn.arguments | tojson }}{%- endif %}"
    "}\n</tool_call>{%- endfor %}<|im_end|>\n"
    "{%- elif message.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ message.content }}\n"
    "</tool_response><|im_end|>\n"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n"
    "{%- if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{%- endif %}"
    "{%- endif %}"
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Qwen3 is a family of open-weight language models, from 0.6B to 235B-A22B parameters.",
    "Kubernetes schedules pods on nodes; an operator reconciles the desired state.",
    "def add(a, b):\n    return a + b\n",
    '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}',
    "Hello! How can I help you today? Let me think about this step by step.",
    "0123456789 + - * / = ( ) [ ] { } < > , . ; : ! ? ' \" # @ & % $ _ ~ ` | \\",
]


def build_tokenizer(out: Path) -> int:
    """Train a small byte-level BPE with Qwen3's special tokens; save it with its chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 50, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        model_max_length=131072,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out))
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = CHAT_TEMPLATE  # inline, as Qwen3's own tokenizer_config.json carries it
    config_path.write_text(json.dumps(config, indent=2))
    (out / "chat_template.jinja").unlink(missing_ok=True)
    return int(tok.get_vocab_size())


def build_model(out: Path, vocab: int) -> None:
    """A two-layer Qwen3ForCausalLM with head_dim 128 (the CPU attention backend's minimum), random weights."""
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    eos = 2  # <|im_end|>, as SPECIAL_TOKENS orders them
    config = Qwen3Config(
        vocab_size=vocab,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=128,
        max_position_embeddings=40960,
        rope_theta=1000000.0,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=eos,
        pad_token_id=0,
        torch_dtype="bfloat16",
    )
    model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(str(out), safe_serialization=True)
    GenerationConfig(bos_token_id=0, eos_token_id=[eos, 0], pad_token_id=0).save_pretrained(str(out))


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    vocab = build_tokenizer(out)
    build_model(out, vocab)
    required = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"]
    missing = [name for name in required if not (out / name).exists()]
    if missing:
        raise SystemExit(f"checkpoint incomplete, missing: {missing}")
    print(f"tiny Qwen3 checkpoint written to {out} (vocab {vocab})")


if __name__ == "__main__":
    main()
