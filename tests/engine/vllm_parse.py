"""Parses `vllm serve` command lines with the pinned vLLM's own CLI parser; run by the engine's interpreter.

Reads a JSON list of argv lists (each starting with "serve") on stdin and prints a JSON list of failures:
`{"argv": [...], "error": "..."}` for a line the parser or vLLM's serve-argument checks reject, a deprecated flag,
or a tool-call or reasoning parser name vLLM does not register.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys


def main() -> None:
    from vllm.entrypoints.cli import serve
    from vllm.entrypoints.launchers.cli_args import validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="vllm")
    subparsers = parser.add_subparsers(required=False, dest="subparser")
    serve_parser = serve.ServeSubcommand().subparser_init(subparsers)
    deprecated = {opt for action in getattr(serve_parser, "_deprecated", set()) for opt in action.option_strings}
    tool_parsers: set[str] = set()
    reasoning_parsers: set[str] = set()
    with contextlib.suppress(ImportError):
        from vllm.tool_parsers import ToolParserManager

        tool_parsers = set(ToolParserManager.list_registered())
    with contextlib.suppress(ImportError):
        from vllm.reasoning import ReasoningParserManager

        reasoning_parsers = set(ReasoningParserManager.list_registered())
    failures = []
    for argv in json.load(sys.stdin):
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                args = parser.parse_args(argv)
                validate_parsed_serve_args(args)
        except SystemExit:
            failures.append({"argv": argv, "error": err.getvalue().strip().splitlines()[-1]})
            continue
        except Exception as exc:
            failures.append({"argv": argv, "error": f"{type(exc).__name__}: {exc}"})
            continue
        used = {a.split("=", 1)[0] for a in argv if a.startswith("-")}
        if used & deprecated:
            failures.append({"argv": argv, "error": f"deprecated: {sorted(used & deprecated)}"})
        if tool_parsers and args.tool_call_parser and args.tool_call_parser not in tool_parsers:
            failures.append({"argv": argv, "error": f"unknown tool-call parser {args.tool_call_parser}"})
        if reasoning_parsers and args.reasoning_parser and args.reasoning_parser not in reasoning_parsers:
            failures.append({"argv": argv, "error": f"unknown reasoning parser {args.reasoning_parser}"})
    print(json.dumps({"failures": failures, "tool_parsers": len(tool_parsers),
                      "reasoning_parsers": len(reasoning_parsers)}))  # fmt: skip


if __name__ == "__main__":
    main()
