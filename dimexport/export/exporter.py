"""`dimexport export`: model -> ONNX artifact folder (model.onnx + model.onnx.data + manifest.json + logs).

The folder name is a hash of everything that changes the file (config, weights, dtype, shapes, opset,
scan mode, versions), so a re-run reuses it and a changed input never picks up a stale one.

A latent model exported with a VAE (`--vae`) also gets the VAE's decoder, decoder.onnx (+ .data), in the same
folder, dtype and batch range: latents as the sampler makes them in, images in [-1, 1] out, so the whole pipeline
(sampler, denoiser, decoder) runs on one backend, as demoDiffusion does. The VAE's content hash is in the key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal

import onnx
import torch

from .. import __version__
from ..cache import keep_failed, publish, reuse, scratch
from ..configs import ModelConfig, get_config
from ..errors import EXIT_BUILD_FAILED, DimexportError, InputError
from ..models import DTYPES, cast_model, example_inputs
from ..models.checkpoint import embedded_weights, file_sha256, load_model
from ..models.vae import SCALE, LatentDecoder, diffusers_version, load_vae, vae_sha256
from . import scan_node

MANIFEST_FORMAT = 1
ONNX_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
INPUT_NAMES = ("x", "t", "y")
OUTPUT_NAME = "out"
DECODER_FILE = "decoder.onnx"
DECODER_DATA_FILE = "decoder.onnx.data"
DECODER_INPUT = "latents"
DECODER_OUTPUT = "images"
DEFAULT_OPSET = 20
BF16_MIN_OPSET = 22


class ExportError(DimexportError):
    """The exporter or a post-export check failed; the message names the step and the log file."""

    exit_code = EXIT_BUILD_FAILED


@dataclass(frozen=True)
class ExportSpec:
    """What to export; every field is part of the artifact's content key."""

    model_id: str
    resolution: int
    dtype: Literal["fp32", "fp16", "bf16"] = "fp32"
    scan: Literal["plugin", "portable"] = "plugin"
    batch: tuple[int, int, int] = (1, 1, 8)  # min, opt, max of the dynamic batch dimension
    checkpoint: str | None = None
    seed: int = 0
    opset: int | None = None  # default: 20, or 22 for bf16 (ONNX Conv takes bfloat16 from opset 22)
    random_init: bool = False  # seeded random weights, also for a model that ships trained ones
    vae: str | None = None  # latent models: the SD VAE whose decoder is exported beside the denoiser

    def __post_init__(self) -> None:
        if self.opset is None:
            object.__setattr__(self, "opset", BF16_MIN_OPSET if self.dtype == "bf16" else DEFAULT_OPSET)
        cfg = get_config(self.model_id)
        cfg.grid(self.resolution)
        if self.vae is not None:
            if cfg.latent_factor == 1:
                raise InputError(f"--vae: {cfg.id} samples pixels, it has no latents to decode: drop --vae")
            object.__setattr__(self, "vae", str(Path(self.vae).resolve()))  # the key holds its hash, not its path
        if self.dtype not in DTYPES:
            raise InputError(f"--dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.scan not in ("plugin", "portable"):
            raise InputError(f"--scan {self.scan!r} must be 'plugin' or 'portable'")
        lo, opt, hi = self.batch
        if not 1 <= lo <= opt <= hi:
            raise InputError(f"--batch must be min:opt:max with 1 <= min <= opt <= max, got {lo}:{opt}:{hi}")
        if not 18 <= self.opset <= 23:
            raise InputError(f"--opset {self.opset} is outside the supported 18..23")
        if self.dtype == "bf16" and self.opset < BF16_MIN_OPSET:
            raise InputError(f"--dtype bf16 needs --opset {BF16_MIN_OPSET} or newer (ONNX Conv has no bfloat16 before it)")

    @property
    def config(self) -> ModelConfig:
        return get_config(self.model_id)

    def expected_scan_nodes(self) -> int:
        """DiM scans once per layer, DiS twice per block (bimamba v2)."""
        cfg = self.config
        return cfg.num_blocks * (2 if cfg.family == "dis" else 1)


def parse_batch(text: str) -> tuple[int, int, int]:
    """'8' -> (8, 8, 8); '1:8:32' -> (1, 8, 32)."""
    try:
        parts = [int(p) for p in text.split(":")]
    except ValueError:
        raise InputError(f"--batch {text!r} must be N or MIN:OPT:MAX integers") from None
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3:
        raise InputError(f"--batch {text!r} must be N or MIN:OPT:MAX")
    return tuple(parts)  # type: ignore[return-value]


def _versions() -> dict[str, str]:
    import onnxscript

    return {"dimexport": __version__, "torch": torch.__version__, "onnx": onnx.__version__, "onnxscript": onnxscript.__version__}


def export_key(spec: ExportSpec, weights: str, vae: str | None = None) -> str:
    """The content key; `vae` is the VAE's content hash when the artifact carries its decoder (paths are left out:
    the same files elsewhere give the same key). Without a VAE the key is what it was before decoders existed."""
    fields = {k: v for k, v in dataclasses.asdict(spec).items() if k != "vae"}
    payload = {
        "spec": fields | {"checkpoint": None},
        "weights": weights,
        "config": spec.config.to_dict(),
        "node": [scan_node.DOMAIN, scan_node.OP_TYPE, scan_node.PLUGIN_VERSION],
        "versions": _versions(),
        "format": MANIFEST_FORMAT,
    }
    if vae is not None:
        payload["vae"] = {"sha256": vae, "scale": SCALE, "io": [DECODER_INPUT, DECODER_OUTPUT],
                          "diffusers": diffusers_version()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _check_graph(path: Path) -> onnx.ModelProto:
    """What every exported graph must satisfy: no local functions (TensorRT may inline them differently, or pick
    them over the plugin), no unconverted torch ops; returns the graph without its weights."""
    graph_only = onnx.load(str(path), load_external_data=False)
    if graph_only.functions:
        names = ", ".join(f.name for f in graph_only.functions)
        raise ExportError(f"export left local functions ({names}); TensorRT may pick them over the plugin")
    stray = sorted({n.domain for n in graph_only.graph.node if n.domain.startswith("pkg.")})
    if stray:
        raise ExportError(f"export left unconverted torch ops in domains {stray}")
    return graph_only


def _full_check(path: Path) -> None:
    scan_node.register_schema()
    try:
        onnx.checker.check_model(str(path), full_check=True)  # by path: models over 2 GB
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected {path}: {exc}") from exc


def check_exported(path: Path, spec: ExportSpec) -> int:
    """Fail loudly unless the file is what the rest of the pipeline relies on; returns the scan-node count."""
    graph_only = _check_graph(path)
    nodes = list(graph_only.graph.node)
    found = sum(n.op_type == scan_node.OP_TYPE and n.domain == scan_node.DOMAIN for n in nodes)
    domains = {o.domain for o in graph_only.opset_import}
    if spec.scan == "plugin":
        expected = spec.expected_scan_nodes()
        if found != expected:
            raise ExportError(f"expected {expected} {scan_node.OP_TYPE} nodes for {spec.model_id}, found {found}")
        if scan_node.DOMAIN not in domains:
            raise ExportError(f"the custom domain {scan_node.DOMAIN!r} is missing from opset_import")
    elif found or scan_node.DOMAIN in domains:
        raise ExportError(f"the portable graph still has {found} custom scan nodes / the {scan_node.DOMAIN} domain")
    _full_check(path)
    return found


def check_decoder(path: Path) -> None:
    """The decoder graph: standard ops only (no scan node, no custom domain), the same checks as the denoiser's."""
    graph_only = _check_graph(path)
    custom = sorted({n.domain for n in graph_only.graph.node if n.domain not in ("", "ai.onnx")})
    if custom:
        raise ExportError(f"the decoder graph has nodes in custom domains {custom}; it must be standard ONNX")
    _full_check(path)


def build_for_export(spec: ExportSpec) -> torch.nn.Module:
    """The module `spec` describes, cast to its dtype: what export traces and what verify compares against."""
    cfg = spec.config
    model = load_model(cfg, spec.checkpoint, spec.resolution, spec.seed, embedded=not spec.random_init)
    model = cast_model(model, DTYPES[spec.dtype])
    if cfg.family == "dim":
        model.layout(cfg.grid(spec.resolution))  # index constants built eagerly, not traced
    return model


def build_decoder_for_export(spec: ExportSpec) -> torch.nn.Module:
    """The VAE decoder `spec` names, in its dtype: what export traces and what verify compares against."""
    if spec.vae is None:
        raise InputError(f"{spec.model_id}'s artifact has no decoder: export it with --vae PATH")
    return LatentDecoder(load_vae(spec.vae, spec.config)).to(DTYPES[spec.dtype]).eval()


def _trace_batch(spec: ExportSpec) -> int:
    """torch.export specialises a dimension whose example size is 1: trace with 2 whenever the range allows."""
    lo, opt, hi = spec.batch
    return opt if opt > 1 else min(2, hi)


def _torch_export(spec: ExportSpec, model: torch.nn.Module, inputs: dict[str, torch.Tensor], output: str, path: Path,
                  log: io.TextIOBase, **kwargs) -> None:
    """torch.onnx.export (dynamo) with the batch dimension of every input dynamic when the range allows, saved
    with external data; the exporter's prints go to `log`."""
    batch = {0: "batch"} if spec.batch[2] > 1 else None
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, tuple(inputs.values()), dynamo=True, opset_version=spec.opset, input_names=list(inputs),
            output_names=[output], dynamic_shapes=(batch,) * len(inputs), **kwargs,
        )
        program.save(str(path), external_data=True)


def _write_onnx(spec: ExportSpec, model: torch.nn.Module, folder: Path, log: io.TextIOBase) -> None:
    x, t, y = example_inputs(model.cfg, _trace_batch(spec), spec.resolution)
    _torch_export(spec, model, dict(zip(INPUT_NAMES, (x.to(DTYPES[spec.dtype]), t, y))), OUTPUT_NAME,
                  folder / ONNX_FILE, log,
                  custom_translation_table=scan_node.translation_table())
    if spec.scan == "portable":
        from .portable import expand_scan_nodes

        graph = onnx.load(str(folder / ONNX_FILE), load_external_data=False)
        onnx.save(expand_scan_nodes(graph), str(folder / ONNX_FILE))  # initializers keep pointing at the .data file


def _write_decoder_onnx(spec: ExportSpec, decoder: torch.nn.Module, folder: Path, log: io.TextIOBase) -> None:
    shape = spec.config.input_shape(_trace_batch(spec), spec.resolution)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(DTYPES[spec.dtype])
    _torch_export(spec, decoder, {DECODER_INPUT: latents}, DECODER_OUTPUT, folder / DECODER_FILE, log)


@contextlib.contextmanager
def _exporting(what: str, tmp: Path, folder: Path, log: io.TextIOBase) -> Iterator[None]:
    """torch.onnx's logging into the export log, and an exporter crash turned into an ExportError that names
    `what` and the kept log."""
    torch_log = logging.getLogger("torch.onnx")  # torch's own handlers hold the real stderr
    saved = torch_log.handlers[:], torch_log.propagate
    torch_log.handlers, torch_log.propagate = [logging.StreamHandler(log)], False
    try:
        yield
    except DimexportError:
        raise
    except Exception as exc:
        log.write(f"\n{type(exc).__name__}: {exc}\n")
        log.flush()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        failed = keep_failed(tmp, folder)
        raise ExportError(f"torch.onnx.export failed for {what}: {first[:300]} (full log: {failed / 'logs' / 'export.log'})") from exc
    finally:
        torch_log.handlers, torch_log.propagate = saved


@dataclass
class Artifact:
    folder: Path
    manifest: dict

    @property
    def onnx_path(self) -> Path:
        return self.folder / ONNX_FILE

    @property
    def decoder_path(self) -> Path | None:
        """decoder.onnx when the artifact carries the VAE decoder (exported with --vae), else None."""
        return self.folder / self.manifest["decoder"]["file"] if self.manifest.get("decoder") else None


def spec_command(spec: dict, verb: str = "export") -> str:
    """The `dimexport export` or `dimexport build` command line that makes an artifact of `spec` (a manifest's spec):
    what error messages tell the user to run."""
    lo, opt, hi = spec["batch"]
    dtype = f"--{spec['dtype']}" if verb == "build" else f"--dtype {spec['dtype']}"
    if spec["checkpoint"]:
        weights = f"--checkpoint {spec['checkpoint']}"
    else:
        weights = ("--random-init " if spec.get("random_init") else "") + f"--seed {spec['seed']}"
    vae = f" --vae {spec['vae']}" if spec.get("vae") else ""
    return (f"dimexport {verb} --model {spec['model_id']} {dtype} --scan {spec['scan']} "
            f"--resolution {spec['resolution']} --batch {lo}:{opt}:{hi} {weights}{vae}")


def read_artifact(folder: str | os.PathLike, verify_hashes: bool = True) -> Artifact:
    """Open an artifact folder, refusing one that is incomplete, altered or written by another format."""
    folder = Path(folder)
    mpath = folder / "manifest.json"
    if not mpath.is_file():
        raise InputError(f"{folder} is not a dimexport artifact (no manifest.json); run `dimexport export` first")
    manifest = json.loads(mpath.read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise InputError(
            f"{folder} was written by dimexport {manifest.get('versions', {}).get('dimexport', '?')} in artifact "
            f"format {manifest.get('format')}; this dimexport {__version__} reads format {MANIFEST_FORMAT}: "
            f"re-export with --force"
        )
    for name, meta in manifest["files"].items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != meta["bytes"]:
            raise InputError(f"artifact {folder} is incomplete: {name} is missing or truncated; re-export with --force")
        if verify_hashes and file_sha256(path) != meta["sha256"]:
            raise InputError(f"artifact {folder}: {name} does not match its manifest hash; re-export with --force")
    return Artifact(folder, manifest)


def artifact_folder(spec: ExportSpec, out_dir: str | os.PathLike) -> tuple[Path, str, str]:
    """Where the artifact of `spec` lives (out_dir/<model-id>/<scan>-<dtype>-<key[:12]>), its content key and the
    weights' identity: the one place that names artifact folders (export, and lookups of sibling exports)."""
    if spec.checkpoint and not Path(spec.checkpoint).is_file():
        raise InputError(f"checkpoint {spec.checkpoint!r} does not exist or is not a file")
    if spec.checkpoint:
        weights = f"sha256:{file_sha256(Path(spec.checkpoint))}"
    elif not spec.random_init and embedded_weights(spec.config) is not None:
        weights = f"embedded:sha256:{spec.config.weights_sha256}"
    else:
        weights = f"random-init:seed={spec.seed}"
    vae_hash = vae_sha256(spec.vae) if spec.vae else None  # a bad --vae path fails here, before anything is built
    key = export_key(spec, weights, vae_hash)
    return Path(out_dir) / spec.model_id / f"{spec.scan}-{spec.dtype}-{key[:12]}", key, weights


def _record_vae_path(artifact: Artifact, path: str) -> None:
    """Point a reused artifact at the VAE where it now is: the key holds the VAE's hash, not its path, so an export
    with the same files elsewhere reuses the folder, and the PyTorch reference (verify, torch decoding) must load
    them from the new place."""
    artifact.manifest["spec"]["vae"] = artifact.manifest["decoder"]["vae"]["path"] = path
    tmp = artifact.folder / f"manifest.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(artifact.manifest, indent=2))
    tmp.replace(artifact.folder / "manifest.json")


def export(
    spec: ExportSpec, out_dir: str | os.PathLike, force: bool = False, status: Callable[[str], None] = lambda s: None
) -> tuple[Artifact, bool]:
    """Export (or reuse) the artifact for `spec` under out_dir/<model-id>/<key>/; returns (artifact, reused)."""
    folder, key, weights = artifact_folder(spec, out_dir)
    if (found := reuse(folder, read_artifact, force, status)) is not None:
        if spec.vae and found.manifest["spec"]["vae"] != spec.vae:  # the same VAE (by hash), now at spec.vae
            _record_vae_path(found, spec.vae)
        return found, True
    started = time.perf_counter()
    # A VAE or checkpoint that does not fit fails here, before a scratch folder exists.
    decoder = build_decoder_for_export(spec) if spec.vae else None
    status(f"building {spec.model_id} ({spec.dtype})")
    model = build_for_export(spec)
    tmp = scratch(folder)
    (tmp / "logs").mkdir()
    log_path = tmp / "logs" / "export.log"
    with open(log_path, "w") as log:
        status(f"exporting {spec.model_id} to ONNX ({spec.scan} scan), log: {folder / 'logs' / 'export.log'}")
        with _exporting(spec.model_id, tmp, folder, log):
            _write_onnx(spec, model, tmp, log)
        if decoder is not None:
            decoder_started = time.perf_counter()
            status(f"exporting the VAE decoder to ONNX, log: {folder / 'logs' / 'export.log'}")
            with _exporting(f"{spec.model_id}'s VAE decoder ({spec.vae})", tmp, folder, log):
                _write_decoder_onnx(spec, decoder, tmp, log)
            decoder_seconds = round(time.perf_counter() - decoder_started, 1)
    status("checking the exported graph")
    try:
        nodes = check_exported(tmp / ONNX_FILE, spec)
        if decoder is not None:
            check_decoder(tmp / DECODER_FILE)
    except ExportError as exc:
        raise ExportError(f"{exc} (files kept in {keep_failed(tmp, folder)})") from exc
    files = {}
    for name in (ONNX_FILE, DATA_FILE, DECODER_FILE, DECODER_DATA_FILE):
        if (tmp / name).is_file():
            files[name] = {"bytes": (tmp / name).stat().st_size, "sha256": file_sha256(tmp / name)}
    cfg = spec.config
    manifest = {
        "format": MANIFEST_FORMAT,
        "key": key,
        "spec": dataclasses.asdict(spec),
        "weights": weights,
        "config": cfg.to_dict(),
        "versions": _versions(),
        "scan_node": {"domain": scan_node.DOMAIN, "op_type": scan_node.OP_TYPE, "plugin_version": scan_node.PLUGIN_VERSION,
                      "plugin_namespace": scan_node.PLUGIN_NAMESPACE, "count": nodes,
                      "scans": spec.expected_scan_nodes()},
        "inputs": {
            "x": {"shape": ["batch", *cfg.input_shape(1, spec.resolution)[1:]], "dtype": spec.dtype},
            "t": {"shape": ["batch"], "dtype": "fp32"},
            "y": {"shape": ["batch"], "dtype": "int64"},
        },
        "outputs": {OUTPUT_NAME: {"shape": ["batch", cfg.out_channels, *cfg.input_shape(1, spec.resolution)[2:]], "dtype": spec.dtype}},
        "seq_len": cfg.seq_len(spec.resolution),
        "files": files,
        "export_seconds": round(time.perf_counter() - started, 1),
    }
    if decoder is not None:
        vae_cfg = decoder.vae.config
        manifest["decoder"] = {
            "file": DECODER_FILE,
            "vae": {"path": spec.vae, "sha256": vae_sha256(spec.vae), "block_out_channels": list(vae_cfg.block_out_channels),
                    "latent_channels": vae_cfg.latent_channels},
            "scale": SCALE,
            "inputs": {DECODER_INPUT: {"shape": ["batch", *cfg.input_shape(1, spec.resolution)[1:]], "dtype": spec.dtype}},
            "outputs": {DECODER_OUTPUT: {"shape": ["batch", vae_cfg.out_channels, spec.resolution, spec.resolution],
                                         "dtype": spec.dtype, "range": [-1, 1]}},
            "export_seconds": decoder_seconds,
        }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    publish(tmp, folder)
    return Artifact(folder, manifest), False
