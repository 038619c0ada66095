"""Parity metrics, per-dtype tolerances and the verify driver (Polygraphy-compatible inputs/outputs).

An artifact with a VAE decoder is checked twice: the denoiser on (x, t, y) and the decoder on seeded latents, each
against PyTorch with the same per-dtype tolerances, each its own row (output `out`, output `images`)."""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import EnvironmentProblem, InputError
from ..export.exporter import DECODER_INPUT, DECODER_OUTPUT, OUTPUT_NAME, Artifact, read_artifact
from ..trt.build import BUILD_JSON, EngineArtifact
from .backends import BACKENDS, DECODER_BACKENDS, run_decoder

# Defaults per artifact dtype: norm-wise relative error, and the elementwise |a-b| <= atol + rtol*|b| check.
TOLERANCES = {
    "fp32": {"rel_l2": 1e-4, "atol": 1e-3, "rtol": 1e-3},
    "fp16": {"rel_l2": 1e-2, "atol": 5e-2, "rtol": 5e-2},
    "bf16": {"rel_l2": 3e-2, "atol": 1e-1, "rtol": 1e-1},
}


@dataclass
class Comparison:
    output: str
    backend: str
    reference: str
    max_abs: float
    max_rel: float
    rel_l2: float
    cosine: float
    psnr_db: float
    nonfinite: int
    passed: bool


def compare(out: np.ndarray, ref: np.ndarray, tol: dict[str, float], names: tuple[str, str, str]) -> Comparison:
    a, b = out.astype(np.float64), ref.astype(np.float64)
    diff = np.abs(a - b)
    nonfinite = int((~np.isfinite(a)).sum())
    rel_l2 = float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))
    cosine = float((a * b).sum() / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))
    rmse = float(np.sqrt((diff**2).mean()))
    peak = float(b.max() - b.min())
    psnr = math.inf if rmse == 0 else 20 * math.log10(max(peak, 1e-30) / rmse)
    elementwise = bool((diff <= tol["atol"] + tol["rtol"] * np.abs(b)).all())
    passed = nonfinite == 0 and rel_l2 <= tol["rel_l2"] and elementwise
    return Comparison(*names, float(diff.max()), float((diff / (np.abs(b) + 1e-6)).max()), rel_l2, cosine, psnr, nonfinite, passed)


def parse_tolerance(values: tuple[str, ...], name: str) -> dict[str, float]:
    """'--atol 1e-3' or '--atol out:1e-3' -> {output_or_'*': value}."""
    parsed = {}
    for v in values:
        out, _, num = v.rpartition(":")
        try:
            parsed[out or "*"] = float(num)
        except ValueError:
            raise InputError(f"--{name} {v!r} must be X or OUTPUT:X with X a number") from None
    return parsed


def _batch(artifact: Artifact) -> int:
    """The batch verify feeds: the export's opt batch, at least 2 where its range allows (catches batch mix-ups)."""
    lo, opt, hi = artifact.manifest["spec"]["batch"]
    return min(hi, max(opt, 2))


def _np_dtype(artifact: Artifact) -> type:
    return np.float16 if artifact.manifest["spec"]["dtype"] == "fp16" else np.float32


def make_inputs(artifact: Artifact, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded latents, timesteps spread over 1..999 and labels that include the null (CFG) label."""
    m = artifact.manifest
    batch = _batch(artifact)
    rng = np.random.default_rng(seed)
    shape = [batch, *m["inputs"]["x"]["shape"][1:]]
    x = rng.standard_normal(shape).astype(_np_dtype(artifact))
    t = np.linspace(1, 999, batch).astype(np.float32)
    classes = m["config"]["num_classes"]
    y = (np.arange(batch) * 7 % max(classes, 1)).astype(np.int64)
    y[-1] = classes  # the null label
    return {"x": x, "t": t, "y": y}


def make_decoder_inputs(artifact: Artifact, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded unit-normal latents at the sampler's scale (what a sample ends with), the decoder's only input."""
    shape = [_batch(artifact), *artifact.manifest["decoder"]["inputs"][DECODER_INPUT]["shape"][1:]]
    rng = np.random.default_rng([seed, 1])  # not the denoiser's x
    return {DECODER_INPUT: rng.standard_normal(shape).astype(_np_dtype(artifact))}


def tolerances(dtype: str, output: str, atol: dict[str, float] | None = None,
               rtol: dict[str, float] | None = None) -> dict[str, float]:
    """The dtype's defaults, overridden by --atol/--rtol given for `output` or for every output ('*')."""
    tol = dict(TOLERANCES[dtype])
    for key, given in (("atol", atol or {}), ("rtol", rtol or {})):
        tol[key] = given.get(output, given.get("*", tol[key]))
    return tol


def polygraphy_command(artifact: Artifact, io_dir: Path, tol: dict[str, float], part: str = "") -> str:
    """The `polygraphy run` that repeats a check; part 'decoder' (standard ops) checks decoder.onnx in ORT."""
    if part:
        model, runner = artifact.decoder_path, "--onnxrt"
    else:
        model = artifact.onnx_path
        runner = "--onnxrt" if artifact.manifest["spec"]["scan"] == "portable" else "--trt --plugins <libdimexport_trt_plugin.so>"
    tag = f"_{part}" if part else ""
    return (
        f"polygraphy run {shlex.quote(str(model))} {runner} "
        f"--load-inputs {shlex.quote(str(io_dir / f'inputs{tag}.json'))} "
        f"--load-outputs {shlex.quote(str(io_dir / f'outputs{tag}_torch.json'))} --atol {tol['atol']} --rtol {tol['rtol']}"
    )


def verify(
    folder: str | Path,
    backends: list[str],
    atol: dict[str, float] | None = None,
    rtol: dict[str, float] | None = None,
    save_io: str | Path | None = None,
    seed: int = 0,
    device: str = "cpu",
    engine: str | Path | None = None,
) -> dict:
    """Run every backend on the same inputs; compare each with PyTorch. Returns the JSON-able report.

    `engine` picks the trt backend's engine (default: the artifact's newest one for this TensorRT and GPU)."""
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise InputError(f"--backends must list some of {', '.join(BACKENDS)}; got {','.join(backends) or 'nothing'}")
    artifact = read_artifact(folder)
    dtype = artifact.manifest["spec"]["dtype"]
    tol = tolerances(dtype, OUTPUT_NAME, atol, rtol)
    feeds = make_inputs(artifact, seed)
    outputs = {"torch": BACKENDS["torch"](artifact, feeds, device, engine)}
    for name in backends:
        if name != "torch":
            outputs[name] = BACKENDS[name](artifact, feeds, device, engine)
    rows = [compare(outputs[n], outputs["torch"], tol, (OUTPUT_NAME, n, "torch")) for n in outputs if n != "torch"]
    report = {
        "artifact": str(artifact.folder),
        "model": artifact.manifest["spec"]["model_id"],
        "dtype": dtype,
        "scan": artifact.manifest["spec"]["scan"],
        "inputs": {k: list(v.shape) for k, v in feeds.items()},
        "tolerances": tol,
        "comparisons": [asdict(r) for r in rows],
    }
    if save_io:
        report["polygraphy"] = _save_io(Path(save_io), feeds, outputs, artifact, tol, OUTPUT_NAME)
    if artifact.decoder_path is not None:
        dec_tol = tolerances(dtype, DECODER_OUTPUT, atol, rtol)
        latents = make_decoder_inputs(artifact, seed)
        images = {name: run_decoder(name, artifact, latents[DECODER_INPUT], device, engine)
                  for name in ["torch", *(b for b in backends if b in DECODER_BACKENDS and b != "torch")]}
        dec_rows = [compare(images[n], images["torch"], dec_tol, (DECODER_OUTPUT, n, "torch")) for n in images if n != "torch"]
        report["comparisons"] += [asdict(r) for r in dec_rows]
        report["decoder"] = {"inputs": {k: list(v.shape) for k, v in latents.items()}, "tolerances": dec_tol,
                             "vae": artifact.manifest["decoder"]["vae"]["path"]}
        if save_io:
            report["decoder"]["polygraphy"] = _save_io(Path(save_io), latents, images, artifact, dec_tol, DECODER_OUTPUT,
                                                       "decoder")
    report["passed"] = all(r["passed"] for r in report["comparisons"])
    return report


def _save_io(io_dir: Path, feeds: dict, outputs: dict, artifact: Artifact, tol: dict, output: str,
             part: str = "") -> str:
    """Inputs and every backend's outputs in Polygraphy's JSON formats, plus the command that reproduces the check."""
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.ERROR  # keep stdout clean for --json
    from polygraphy.comparator import IterationResult, RunResults
    from polygraphy.json import save_json

    io_dir.mkdir(parents=True, exist_ok=True)
    tag = f"_{part}" if part else ""
    save_json([feeds], str(io_dir / f"inputs{tag}.json"))
    for name, out in outputs.items():
        results = RunResults()
        results.append((name, [IterationResult({output: out}, runner_name=name)]))
        results.save(str(io_dir / f"outputs{tag}_{name}.json"))
    return polygraphy_command(artifact, io_dir, tol, part)


def quick_verify(engine: EngineArtifact, seed: int = 0) -> dict:
    """One forward of the engine against PyTorch on the GPU, with `verify`'s default tolerances; the summary
    goes into build.json. An engine this process cannot run (e.g. TensorRT-RTX on sm_90) is reported, not raised."""
    try:
        report = verify(engine.folder.parent.parent, ["trt"], seed=seed, device="cuda", engine=engine.folder)
        metrics = ("rel_l2", "max_abs", "cosine", "psnr_db")
        row = report["comparisons"][0]
        summary = {"ran": True, "passed": report["passed"], "inputs": report["inputs"], "tolerances": report["tolerances"]}
        summary |= {k: row[k] for k in metrics}
        decoded = [r for r in report["comparisons"] if r["output"] == DECODER_OUTPUT]
        if decoded:
            summary["decoder"] = {"passed": decoded[0]["passed"]} | {k: decoded[0][k] for k in metrics}
    except EnvironmentProblem as exc:
        summary = {"ran": False, "passed": None, "reason": str(exc)}
    engine.info["verify"] = summary
    (engine.folder / BUILD_JSON).write_text(json.dumps(engine.info, indent=2))
    return summary
