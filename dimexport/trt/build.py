"""`dimexport build`: export (cached) -> plugin library -> ONNX parse -> strongly typed network -> profile ->
optimisation level + shared timing cache -> engine + build.json -> quick verify.

The parse and the build run in a child process (`python -m dimexport.trt.build JOB.json`): TensorRT can abort
the process from native code (TensorRT-RTX 1.7's parser does on a plugin node), and a child turns that into
a message naming the stage, the signal and the log instead of a dead CLI. The child also returns all the
builder's GPU memory when it exits.

Layout: `<artifact>/engines/<name>/{<name>.engine, build.json, build.log}` with
`<name> = <model>-<scan>-<dtype>-<trt version>-<sm>-<key12>`; the key hashes the export key, TensorRT
module and version, GPU SM, plugin library hash and builder settings, so a stale engine is never reused.
An artifact with a VAE decoder gets its engine in the same folder (`<name>-decoder.engine`, `build-decoder.log`),
built the same way (child process, strongly typed, the batch profile, opt level, timing cache) and recorded
under `decoder` in build.json: one build, one key, one compatibility check for the whole pipeline.
The timing cache is shared by all builds of one TensorRT version and SM under `<out>/timing-caches/`.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .. import __version__
from ..cache import keep_failed, publish, reuse, scratch
from ..libraries import trt_plugin_library_path
from ..errors import EXIT_BUILD_FAILED, EXIT_ENVIRONMENT, DimexportError, EnvironmentProblem, InputError
from ..export.exporter import Artifact, ExportSpec, export, file_sha256
from . import api

ENGINE_FORMAT = 1
BUILD_JSON = "build.json"
LOG_FILE = "build.log"
PARTS = ("denoiser", "decoder")  # the networks one build makes: the decoder when the artifact has one


class BuildError(DimexportError):
    """TensorRT could not parse the graph or build the engine; the message names the node, the stage and the log."""

    exit_code = EXIT_BUILD_FAILED


@dataclass(frozen=True)
class BuildOptions:
    """Builder settings; each is part of the engine's content key."""

    opt_level: int = 3  # IBuilderConfig.builder_optimization_level, 0..5 (TensorRT's default is 3)
    timing_cache: str | None = "auto"  # a file, 'auto' (shared under <out>/timing-caches/) or None (off)
    plugin_library: str | None = None  # default: environment.trt_plugin_library_path()
    module: str | None = None  # 'tensorrt' or 'tensorrt_rtx'; default: whichever imports (api.load)
    workspace_gib: float | None = None  # builder workspace pool limit; None leaves TensorRT's default

    def __post_init__(self) -> None:
        if not 0 <= self.opt_level <= 5:
            raise InputError(f"--opt-level {self.opt_level} must be 0..5")
        if self.workspace_gib is not None and self.workspace_gib <= 0:
            raise InputError(f"--workspace {self.workspace_gib} GiB must be positive")


@dataclass
class EngineArtifact:
    folder: Path
    info: dict  # build.json

    @property
    def engine_path(self) -> Path:
        return self.folder / self.info["engine"]["file"]

    @property
    def decoder_path(self) -> Path | None:
        """The VAE decoder's engine, built when the artifact carries decoder.onnx; None otherwise."""
        decoder = self.info.get("decoder")
        return self.folder / decoder["engine"]["file"] if decoder else None


def _part_files(tmp: Path, name: str, part: str) -> dict[str, str]:
    """Engine, log, result and job files of one part of a build, side by side in the engine folder."""
    tag = "" if part == "denoiser" else f"-{part}"
    return {"engine": str(tmp / f"{name}{tag}.engine"), "log": str(tmp / f"build{tag}.log"),
            "result": str(tmp / f"result{tag}.json"), "job": str(tmp / f"job{tag}.json")}


def read_build(folder: str | os.PathLike) -> EngineArtifact:
    """Open an engine folder (or its .engine file), refusing one without a matching build.json."""
    folder = Path(folder)
    if folder.suffix == ".engine":
        folder = folder.parent
    path = folder / BUILD_JSON
    if not path.is_file():
        raise InputError(f"{folder} holds no {BUILD_JSON}; build engines with `dimexport build`")
    info = json.loads(path.read_text())
    if info.get("format") != ENGINE_FORMAT:
        raise InputError(f"{path} has engine format {info.get('format')}; this dimexport reads {ENGINE_FORMAT}: rebuild with --force")
    for entry in (info["engine"], (info.get("decoder") or {}).get("engine")):
        engine = folder / entry["file"] if entry else None
        if engine and (not engine.is_file() or engine.stat().st_size != entry["bytes"]):
            raise InputError(f"engine {engine} is missing or truncated; rebuild with `dimexport build --force`")
    return EngineArtifact(folder, info)


def find_engines(artifact: Artifact) -> list[EngineArtifact]:
    """Every complete engine built from `artifact`, newest first."""
    found = []
    for build_json in sorted((artifact.folder / "engines").glob(f"*/{BUILD_JSON}")):
        try:
            found.append(read_build(build_json.parent))
        except InputError:
            continue
    return sorted(found, key=lambda e: e.info["created"], reverse=True)


def _plugin_library(spec: ExportSpec, options: BuildOptions) -> Path | None:
    if spec.scan != "plugin":
        return None
    path = Path(options.plugin_library) if options.plugin_library else trt_plugin_library_path()
    if path is None or not path.is_file():
        raise EnvironmentProblem(
            f"the plugin export needs the TensorRT plugin library libdimexport_trt_plugin.so "
            f"({'not found at ' + str(path) if path else 'not built'}): build it with CMake and TensorRT headers "
            f"(plugins_trt/README.md), pass --plugin-lib or set DIMEXPORT_TRT_PLUGIN_LIB, or build --scan portable"
        )
    return path.resolve()


def engine_key(artifact: Artifact, trt: api.TrtInfo, sm: str, plugin_sha: str | None, options: BuildOptions) -> str:
    payload = {
        "export": artifact.manifest["key"], "trt": dataclasses.asdict(trt), "sm": sm, "plugin": plugin_sha,
        "opt_level": options.opt_level, "workspace_gib": options.workspace_gib, "format": ENGINE_FORMAT,
        "dimexport": __version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def engine_name(spec: ExportSpec, trt: api.TrtInfo, sm: str, key: str) -> str:
    """e.g. 'dim-l-plugin-fp16-trt10.14.1-sm90-3f2a9c0d1e7b'."""
    return f"{spec.model_id}-{spec.scan}-{spec.dtype}-{trt.label()}-{sm.replace('_', '')}-{key[:12]}"


def timing_cache_path(out_dir: Path, trt: api.TrtInfo, sm: str, option: str | None) -> Path | None:
    if option is None:
        return None
    if option == "auto":
        return out_dir / "timing-caches" / f"{trt.label()}-{sm.replace('_', '')}.cache"
    return Path(option)


def build(
    spec: ExportSpec,
    out_dir: str | os.PathLike,
    options: BuildOptions = BuildOptions(),
    force: bool = False,
    status: Callable[[str], None] = lambda s: None,
) -> tuple[EngineArtifact, bool]:
    """Build (or reuse) the engine for `spec`; returns (engine, reused). Exit codes: 4 environment, 5 export or
    build failed (BuildError / ExportError)."""
    out_dir = Path(out_dir)
    trt_module = api.load(options.module)
    trt = api.TrtInfo.of(trt_module)
    sm = api.gpu_sm()
    plugin = _plugin_library(spec, options)
    plugin_sha = file_sha256(plugin) if plugin else None
    artifact, _ = export(spec, out_dir, status=status)
    key = engine_key(artifact, trt, sm, plugin_sha, options)
    name = engine_name(spec, trt, sm, key)
    folder = artifact.folder / "engines" / name
    if (found := reuse(folder, read_build, force, status)) is not None:
        return found, True
    tmp = scratch(folder)
    cache = timing_cache_path(out_dir, trt, sm, options.timing_cache)
    job = make_job(trt, artifact, options, plugin, cache, tmp, name)
    status(f"building the TensorRT engine ({trt.module} {trt.version}, {sm}), log: {folder / LOG_FILE}")
    started = time.perf_counter()
    result = run_isolated(job, tmp, folder)
    decoder = None
    if artifact.decoder_path is not None:
        decoder_job = make_job(trt, artifact, options, None, cache, tmp, name, part="decoder")
        status(f"building the VAE decoder's engine, log: {folder / Path(decoder_job['log']).name}")
        built = run_isolated(decoder_job, tmp, folder)
        decoder = {"engine": {"file": Path(decoder_job["engine"]).name, "bytes": built["engine_bytes"],
                              "sha256": file_sha256(Path(decoder_job["engine"]))},
                   "io": built["io"], "parse_seconds": built["parse_seconds"], "build_seconds": built["build_seconds"]}
    info = {
        "format": ENGINE_FORMAT,
        "key": key,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "dimexport": __version__,
        "artifact": {"folder": str(artifact.folder), "key": artifact.manifest["key"]},
        "spec": artifact.manifest["spec"],
        "tensorrt": dataclasses.asdict(trt),
        "gpu": {"sm": sm, "name": _gpu_name()},
        "plugin": {"library": str(plugin), "sha256": plugin_sha} if plugin else None,
        "builder": {"opt_level": options.opt_level, "workspace_gib": options.workspace_gib,
                    "timing_cache": job["timing_cache"], "strongly_typed": result["strongly_typed"]},
        "engine": {"file": f"{name}.engine", "bytes": result["engine_bytes"], "sha256": file_sha256(Path(job["engine"]))},
        "io": result["io"],
        "parse_seconds": result["parse_seconds"],
        "build_seconds": result["build_seconds"],
        "decoder": decoder,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    (tmp / BUILD_JSON).write_text(json.dumps(info, indent=2))
    for part in PARTS if decoder else PARTS[:1]:
        files = _part_files(tmp, name, part)
        Path(files["job"]).unlink()
        Path(files["result"]).unlink()
    publish(tmp, folder)
    return EngineArtifact(folder, info), False


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name()


def make_job(trt: api.TrtInfo, artifact: Artifact, options: BuildOptions, plugin: Path | None,
             timing_cache: Path | None, tmp: Path, name: str, part: str = "denoiser") -> dict:
    """What the build child needs: every path and setting, as JSON. `part` 'decoder' builds the artifact's VAE
    decoder with the same settings and batch profile (standard ops: no plugin library)."""
    if part not in PARTS:
        raise InputError(f"unknown part {part!r} of a build; one of {', '.join(PARTS)}")
    spec = artifact.manifest["spec"]
    onnx_path = artifact.onnx_path if part == "denoiser" else artifact.decoder_path
    return {
        "module": trt.module, "onnx": str(onnx_path), "plugin_library": str(plugin) if plugin else None,
        "batch": list(spec["batch"]), "dtype": spec["dtype"], "opt_level": options.opt_level,
        "workspace_gib": options.workspace_gib, "timing_cache": str(timing_cache) if timing_cache else None,
        "part": part, **_part_files(tmp, name, part),
    }


def run_isolated(job: dict, tmp: Path, folder: Path) -> dict:
    """Run the parse and build in a child; on failure keep `tmp` as `<folder>.failed` and raise."""
    job_path = Path(job["job"])
    job_path.write_text(json.dumps(job, indent=2))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-m", "dimexport.trt.build", str(job_path)], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    result_path = Path(job["result"])
    result = json.loads(result_path.read_text()) if result_path.is_file() else {"stage": "start"}
    if proc.returncode == 0 and result.get("ok"):
        return result
    log = keep_failed(tmp, folder) / Path(job["log"]).name
    log_lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
    raise child_failure(proc.returncode, result, log, log_lines, proc.stderr.splitlines())


def child_failure(returncode: int, result: dict, log: Path, log_lines: list[str], stderr: list[str]) -> DimexportError:
    """The error for a failed build child: its own message if it wrote one, else how it died and where."""
    if result.get("error"):
        cls = EnvironmentProblem if returncode == EXIT_ENVIRONMENT else BuildError
        return cls(f"{result['error']} (full log: {log})")
    if returncode < 0:
        how = f"was killed by {signal.Signals(-returncode).name}"
    else:
        how = f"exited with code {returncode}"
    last = [line for line in log_lines if line.strip()][-3:] + [line for line in stderr if line.strip()][-3:]
    return BuildError(
        f"the TensorRT build process {how} during '{result.get('stage', 'start')}' (inside TensorRT: nothing in "
        f"dimexport raised). Last messages: {' | '.join(last) or 'none'}. Full log: {log}"
    )


# ---------------------------------------------------------------------------------------------------------
# The child process: everything below runs under `python -m dimexport.trt.build JOB.json`.


class _Result:
    """result.json, rewritten at every stage so the parent knows where a native abort happened."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict = {"ok": False, "stage": "start"}

    def update(self, **values) -> None:
        self.data.update(values)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2))
        tmp.replace(self.path)


def _parse_errors(parser, registry, plugin_library: str | None) -> str:
    """Each parser error with its node; for a plugin node, the lookup that failed and what is registered."""
    lines, plugin_node = [], False
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        node_name = err.node_name() if hasattr(err, "node_name") else ""
        op = err.node_operator() if hasattr(err, "node_operator") else ""
        where = f"node {node_name or '#' + str(err.node())}" + (f" ({op})" if op else "")
        lines.append(f"{where}: {err.desc()}")
        plugin_node |= op == api.PLUGIN_KEY[0] or "plugin" in err.desc().lower()
    message = "; ".join(lines) or "the parser reported failure without errors"
    if plugin_node:
        message += (
            f". Plugin lookup: {'/'.join(api.PLUGIN_KEY)} (name/version/namespace) from "
            f"{plugin_library or 'no plugin library (portable build?)'}; registered creators: "
            f"{', '.join(api.registered_creators(registry)) or 'none'}"
        )
    return message


def _use_timing_cache(config, path: Path) -> bool:
    """Attach the shared timing cache at `path` (a new one if absent); False if it cannot be used here."""
    cache = config.create_timing_cache(path.read_bytes() if path.is_file() else b"")
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return True
    print(f"warning: timing cache {path} is unusable on this GPU or corrupt; building without it", file=sys.stderr)
    config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    return False


def _save_timing_cache(config, path: Path) -> None:
    """Merge this build's timings into the shared file under a lock, so concurrent builds add up."""
    cache = config.get_timing_cache()
    if cache is None:  # TensorRT-RTX keeps no timing cache
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file() and (other := config.create_timing_cache(path.read_bytes())) is not None:
            cache.combine(other, ignore_mismatch=False)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        tmp.write_bytes(memoryview(cache.serialize()))
        tmp.replace(path)


def _profile_shapes(network, batch: list[int]) -> dict[str, list[list[int]]]:
    """min/opt/max per input: the dynamic (-1) batch dimension from `batch`; every other dimension must be fixed."""
    shapes = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = list(tensor.shape)
        if any(d < 0 for d in dims[1:]):
            raise BuildError(f"input {tensor.name} has dynamic dimensions other than the batch: {dims}")
        shapes[tensor.name] = [[b, *dims[1:]] for b in batch]
    return shapes


def _io_table(network) -> list[dict]:
    tensors = [(network.get_input(i), "input") for i in range(network.num_inputs)]
    tensors += [(network.get_output(i), "output") for i in range(network.num_outputs)]
    return [{"name": t.name, "mode": mode, "dtype": t.dtype.name, "shape": list(t.shape)} for t, mode in tensors]


def run_job(job: dict) -> int:
    """Parse and build as `job` says; writes the engine, the log and result.json. Returns the exit code."""
    result = _Result(Path(job["result"]))
    try:
        result.update(ok=True, stage="done", **_parse_and_build(job, result))
        return 0
    except DimexportError as exc:
        result.update(error=str(exc))
        return exc.exit_code
    except Exception as exc:  # the TensorRT bindings raise their own types; name the stage they failed in
        result.update(error=f"TensorRT failed during '{result.data['stage']}': {type(exc).__name__}: {exc}")
        return EXIT_BUILD_FAILED


def _parse_and_build(job: dict, result: _Result) -> dict:
    trt = api.load(job["module"])
    logger = api.logger(trt)
    logger.log_file, logger.echo_level = Path(job["log"]), 1
    builder = trt.Builder(logger)
    flag_enum = trt.NetworkDefinitionCreationFlag
    # TensorRT 10 and TensorRT-RTX need the flag; TensorRT 11 is always strongly typed and ignores it.
    strongly = hasattr(flag_enum, "STRONGLY_TYPED")
    network = builder.create_network(1 << int(flag_enum.STRONGLY_TYPED) if strongly else 0)
    registry = api.registry_of(trt, builder)
    if job["plugin_library"]:
        result.update(stage="load plugin library")
        api.load_plugin_library(trt, registry, Path(job["plugin_library"]))
    result.update(stage="parse")
    parser = trt.OnnxParser(network, logger)
    started = time.perf_counter()
    if not parser.parse_from_file(job["onnx"]):
        raise BuildError(f"TensorRT could not parse {job['onnx']}: {_parse_errors(parser, registry, job['plugin_library'])}")
    parse_seconds = round(time.perf_counter() - started, 2)

    result.update(stage="configure")
    config = builder.create_builder_config()
    config.builder_optimization_level = job["opt_level"]
    if job["workspace_gib"]:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(job["workspace_gib"] * 2**30))
    profile = builder.create_optimization_profile()
    shapes = _profile_shapes(network, job["batch"])
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    if job["dtype"] == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # an fp32 export means fp32 math, as in the PyTorch reference
    cache_path = Path(job["timing_cache"]) if job["timing_cache"] else None
    if cache_path and not _use_timing_cache(config, cache_path):
        cache_path = None  # unusable here (corrupt, or another GPU model of the same SM): leave the file alone

    result.update(stage="build")
    started = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    build_seconds = round(time.perf_counter() - started, 2)
    if plan is None:
        raise BuildError(f"TensorRT's builder returned no engine after {build_seconds} s: {logger.errors_since(0)}")
    result.update(stage="write")
    engine = Path(job["engine"])
    with open(engine, "wb") as f:
        f.write(memoryview(plan))
    if cache_path:
        _save_timing_cache(config, cache_path)
    io = _io_table(network)
    for entry in io:
        if entry["name"] in shapes:
            entry["profile"] = dict(zip(("min", "opt", "max"), shapes[entry["name"]]))
    strongly_typed = strongly or int(trt.__version__.split(".")[0]) >= 11
    return {"strongly_typed": strongly_typed, "engine_bytes": engine.stat().st_size, "io": io,
            "parse_seconds": parse_seconds, "build_seconds": build_seconds}


if __name__ == "__main__":
    sys.exit(run_job(json.loads(Path(sys.argv[1]).read_text())))
