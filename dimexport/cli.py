"""The `dimexport` command line.

Exit codes: 0 success; 2 usage or input error (unknown model, bad resolution, checkpoint that does
not fit, wrong dtype for the device, an incomplete or foreign artifact); 3 a parity check failed;
4 the environment lacks something (a GPU, TensorRT, the plugin library, a package) or an engine was
built for another TensorRT, GPU or plugin library; 5 the ONNX export, its checks, or the TensorRT build failed.
"""

from __future__ import annotations

import functools
import json
import statistics
import sys
import time
from typing import Callable

import click
from rich.console import Console
from rich.table import Table

from . import __version__
from .configs import DTYPE_NAMES, SAMPLERS
from .errors import EXIT_ENVIRONMENT, DimexportError, EnvironmentProblem, InputError

console = Console()
err_console = Console(stderr=True)

EPILOG = "Exit codes: 0 ok, 2 usage or input error, 3 verification failed, 4 environment problem, 5 export or build failed."


def _handle_errors(fn: Callable) -> Callable:
    """Turn dimexport errors into a one-paragraph message and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DimexportError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
            sys.exit(exc.exit_code)

    return wrapper


def _denoiser_options(fn: Callable) -> Callable:
    """--model, --checkpoint, --backend, --artifact, --engine: which denoiser a command runs (sample, serve)."""
    options = [
        click.option("--model", "model_id", required=True, help="Model id (see `dimexport models`)."),
        click.option("--checkpoint", type=click.Path(dir_okay=False), help="Official checkpoint (torch/graph; default: "
                     "embedded trained weights, else seeded random ones)."),
        click.option("--backend", type=click.Choice(["torch", "graph", "ort", "trt"]), default="torch",
                     show_default=True, help="torch: eager PyTorch; graph: PyTorch replayed from CUDA graphs; "
                     "ort/trt: an exported artifact."),
        click.option("--artifact", type=click.Path(file_okay=False), help="Exported artifact folder (ort, trt)."),
        click.option("--engine", type=click.Path(), help="Engine folder (trt; default: the artifact's newest usable one)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dimexport")
def main() -> None:
    """Deploy Diffusion-Mamba (DiM, DiS) models: PyTorch -> ONNX -> TensorRT, with parity checks."""


@main.command(epilog=EPILOG)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models(as_json: bool) -> None:
    """List the model ids with family, parameters, resolution, token count L and checkpoint format."""
    import torch

    from .configs import REGISTRY
    from .models import build_model, count_parameters

    rows = []
    for cfg in REGISTRY.values():
        with torch.device("meta"):
            params = count_parameters(build_model(cfg))
        rows.append(
            {
                "id": cfg.id, "family": cfg.family, "params": params, "hidden": cfg.hidden,
                "blocks": cfg.num_blocks, "patch": cfg.patch, "resolution": cfg.resolution,
                "input": list(cfg.input_shape()[1:]), "seq_len": cfg.seq_len(), "classes": cfg.num_classes,
                "checkpoint_format": cfg.checkpoint_format, "paper": cfg.paper, "weights": cfg.weights or None,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="dimexport models", box=None, pad_edge=False, header_style="bold")
    for col in ("id", "family", "params", "D", "blocks", "px", "L", "weights"):  # fits 80 columns; --json has all
        table.add_column(col, no_wrap=True)
    for r in rows:
        table.add_row(
            r["id"], r["family"], f"{r['params'] / 1e6:.2f}M", str(r["hidden"]), str(r["blocks"]),
            str(r["resolution"]), str(r["seq_len"]),
            "embedded" if r["weights"] else r["checkpoint_format"].split(":")[0].split(" ")[1],
        )
    console.print(table)


@main.command(epilog=EPILOG)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--require",
    default="",
    help="Comma list of components that must be present, else exit 4: gpu, tensorrt, tensorrt_rtx, "
    "scan_library, trt_plugin_library, onnxruntime_extensions, polygraphy.",
)
def doctor(as_json: bool, require: str) -> None:
    """Report Python, torch/CUDA, ONNX, ONNX Runtime providers, TensorRT, the scan library and the GPU."""
    from .environment import probe

    report = probe()
    core = ["torch", "onnx", "onnxscript", "onnxruntime"]
    wanted = core + [r.strip() for r in require.split(",") if r.strip()]
    unknown = [w for w in wanted if w not in {c.name for c in report.components}]
    if unknown:
        raise click.BadParameter(f"unknown component(s) {', '.join(unknown)}", param_hint="--require")
    missing = [w for w in wanted if not report.get(w).found]
    if as_json:
        click.echo(json.dumps({"components": report.to_dict(), "missing_required": missing}, indent=2))
    else:
        table = Table(title="dimexport doctor")
        for col in ("component", "status", "version", "detail"):
            table.add_column(col)
        for c in report.components:
            status = "[green]ok[/]" if c.found else ("[red]MISSING[/]" if c.name in wanted else "[yellow]absent[/]")
            table.add_row(c.name, status, c.version, c.detail)
        console.print(table)
    if missing:
        err_console.print(f"[red]required but missing:[/] {', '.join(missing)}")
        sys.exit(EXIT_ENVIRONMENT)


@main.command(epilog=EPILOG)
@click.option("--model", "model_id", required=True, help="Model id (see `dimexport models`).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Official checkpoint; default random init.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random weights and inputs.")
@click.option("--resolution", type=int, help="Image side in pixels (default: the model's native one).")
@click.option("--batch", default=1, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N].")
@click.option("--dtype", type=click.Choice(DTYPE_NAMES), default="fp32", show_default=True)
@click.option("--repeat", default=3, show_default=True, help="Timed forward passes (after one warm-up).")
@click.option("--cuda-graph", is_flag=True, help="Capture the forward in a CUDA graph and time its replays (CUDA only).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_handle_errors
def forward(model_id, checkpoint, seed, resolution, batch, device, dtype, repeat, cuda_graph, as_json) -> None:
    """Run the denoiser forward pass on seeded inputs: output shape, time and memory."""
    import torch

    from .configs import get_config
    from .models import DTYPES, cast_model, cuda_graphed, example_inputs
    from .models.checkpoint import load_model

    cfg = get_config(model_id)
    res = resolution or cfg.resolution
    cfg.grid(res)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EnvironmentProblem("--device cuda needs a CUDA GPU visible to torch; use --device cpu")
    model = load_model(cfg, checkpoint, resolution, seed)
    model = cast_model(model, DTYPES[dtype]).to(device)
    x, t, y = example_inputs(cfg, batch, res, seed, device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    elif cuda_graph:
        raise InputError("--cuda-graph needs --device cuda")
    run = cuda_graphed(model, (x, t, y)) if cuda_graph else model
    times = []
    with torch.inference_mode():
        for i in range(repeat + 1):
            sync()
            start = time.perf_counter()
            out = run(x, t, y)
            sync()
            if i:
                times.append(time.perf_counter() - start)
    result = {
        "model": cfg.id, "resolution": res, "batch": batch, "device": device, "dtype": dtype, "cuda_graph": cuda_graph,
        "seq_len": cfg.seq_len(res), "output_shape": list(out.shape),
        "median_ms": round(statistics.median(times) * 1e3, 3) if times else None,
        "finite": bool(torch.isfinite(out).all()),
        "peak_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.startswith("cuda") else None,
    }
    if as_json:
        click.echo(json.dumps(result))
    else:
        for k, v in result.items():
            console.print(f"{k:15s} {v}")
    if not result["finite"]:
        raise DimexportError("the output contains NaN or Inf")


@main.command("export", epilog=EPILOG)
@click.option("--model", "model_id", required=True, help="Model id (see `dimexport models`).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Official checkpoint to export.")
@click.option("--random-init", is_flag=True, help="Export seeded random weights, also for a model that ships trained ones (without --checkpoint the default is its embedded weights, else random ones).")
@click.option("--seed", default=0, show_default=True, help="Seed of --random-init.")
@click.option("--resolution", type=int, help="Image side in pixels; fixed per export (the scan orders depend on it).")
@click.option("--batch", default="1:1:8", show_default=True, help="Dynamic batch min:opt:max (or N).")
@click.option("--dtype", type=click.Choice(DTYPE_NAMES), default="fp32", show_default=True,
              help="Type the graph itself carries (TensorRT 11 is strongly typed); A, D, dt bias and norm statistics stay fp32.")
@click.option("--scan", type=click.Choice(["plugin", "portable"]), default="plugin", show_default=True,
              help="plugin: one trt.plugins::DimSelectiveScan node per scan; portable: standard ONNX ops only.")
@click.option("--opset", type=int, help="ONNX opset, 18..23 (default 20; 22 for bf16).")
@click.option("--vae", type=click.Path(), help="Latent models: also export the SD VAE's decoder (a diffusers "
              "AutoencoderKL folder or its weights file) as decoder.onnx in the artifact, latents in, images out.")
@click.option("-o", "--output", "out_dir", default="dimexport-out", show_default=True, help="Artifact root folder.")
@click.option("--force", is_flag=True, help="Re-export even if a matching artifact exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@_handle_errors
def export_cmd(model_id, checkpoint, random_init, seed, resolution, batch, dtype, scan, opset, vae, out_dir, force,
               as_json):
    """Export a model to ONNX into a content-addressed artifact folder (reused when nothing changed)."""
    from .configs import get_config
    from .export.exporter import ExportSpec, export, parse_batch

    if checkpoint and random_init:
        raise InputError("give either --checkpoint or --random-init, not both")
    cfg = get_config(model_id)
    spec = ExportSpec(model_id, resolution or cfg.resolution, dtype, scan, parse_batch(batch), checkpoint, seed, opset,
                      random_init, vae)
    with err_console.status("exporting") as status:
        artifact, reused = export(spec, out_dir, force, status=lambda s: status.update(s))
    m = artifact.manifest
    if as_json:
        click.echo(json.dumps({"artifact": str(artifact.folder), "reused": reused, "manifest": m}, indent=2))
        return
    console.print(f"{'reused' if reused else 'exported'} [bold]{artifact.folder}[/]")
    scans = m["scan_node"]
    form = f"{scans['count']} {scans['op_type']} nodes" if scans["count"] else f"{scans['scans']} scans as standard-op Loops"
    console.print(
        f"  {form}, L={m['seq_len']}, dtype {m['spec']['dtype']}, opset {m['spec']['opset']}, "
        f"{sum(f['bytes'] for f in m['files'].values()) / 2**20:.1f} MiB, export {m['export_seconds']} s"
    )
    if m.get("decoder"):
        d = m["decoder"]
        console.print(f"  VAE decoder {d['file']}: latents {d['inputs']['latents']['shape']} -> images "
                      f"{d['outputs']['images']['shape']}, from {d['vae']['path']} (sha256 {d['vae']['sha256'][:12]})",
                      highlight=False, soft_wrap=True)


@main.command("build", epilog=EPILOG)
@click.option("--model", "model_id", required=True, help="Model id (see `dimexport models`).")
@click.option("--fp32", "dtype", flag_value="fp32", default=True, help="Export and build in fp32 (TF32 off) [default].")
@click.option("--fp16", "dtype", flag_value="fp16", help="Export in fp16; the engine is strongly typed from it.")
@click.option("--bf16", "dtype", flag_value="bf16", help="Export in bf16; the engine is strongly typed from it.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Official checkpoint (default: embedded trained weights, else seeded random ones).")
@click.option("--random-init", is_flag=True, help="Seeded random weights, also for a model that ships trained ones.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random weights.")
@click.option("--resolution", type=int, help="Image side in pixels (fixed per engine).")
@click.option("--batch", default="1:1:8", show_default=True, help="Optimisation profile of the batch, min:opt:max (or N).")
@click.option("--scan", type=click.Choice(["plugin", "portable"]), default="plugin", show_default=True,
              help="plugin: our CUDA scan plugin; portable: standard ops only (no plugin library needed).")
@click.option("--opt-level", type=click.IntRange(0, 5), default=3, show_default=True, help="Builder optimisation level.")
@click.option("--timing-cache", default="auto", show_default=True,
              help="auto (shared per TensorRT version and GPU under OUTPUT/timing-caches/), a file, or none.")
@click.option("--workspace", "workspace_gib", type=float, help="Builder workspace limit in GiB (default: TensorRT's); it also bounds the scan plugin's workspace (up to 9 MB at N=16).")
@click.option("--plugin-lib", type=click.Path(dir_okay=False), help="libdimexport_trt_plugin.so (default: dimexport/lib/ or $DIMEXPORT_TRT_PLUGIN_LIB).")
@click.option("--trt-module", type=click.Choice(["tensorrt", "tensorrt_rtx"]), help="TensorRT flavour (default: tensorrt, else tensorrt_rtx).")
@click.option("--vae", type=click.Path(), help="Latent models: also export and build the SD VAE's decoder (a diffusers "
              "AutoencoderKL folder or its weights file) beside the denoiser's engine, latents in, images out.")
@click.option("--no-verify", is_flag=True, help="Skip the quick parity check against PyTorch after the build.")
@click.option("-o", "--output", "out_dir", default="dimexport-out", show_default=True, help="Artifact root folder.")
@click.option("--force", is_flag=True, help="Rebuild the engine even if a matching one exists (the export stays cached).")
@click.option("--json", "as_json", is_flag=True, help="Print build.json as JSON.")
@_handle_errors
def build_cmd(model_id, dtype, checkpoint, random_init, seed, resolution, batch, scan, opt_level, timing_cache,
              workspace_gib, plugin_lib, trt_module, vae, no_verify, out_dir, force, as_json):
    """Export (cached), build a TensorRT engine with the scan plugin, and check it against PyTorch."""
    from .configs import get_config
    from .errors import EXIT_VERIFY_FAILED
    from .export.exporter import ExportSpec, parse_batch
    from .trt.build import BuildOptions, build
    from .verify.compare import quick_verify

    if checkpoint and random_init:
        raise InputError("give either --checkpoint or --random-init, not both")
    cfg = get_config(model_id)
    spec = ExportSpec(model_id, resolution or cfg.resolution, dtype, scan, parse_batch(batch), checkpoint, seed,
                      random_init=random_init, vae=vae)
    options = BuildOptions(opt_level, None if timing_cache == "none" else timing_cache, plugin_lib, trt_module, workspace_gib)
    with err_console.status("building") as status:
        engine, reused = build(spec, out_dir, options, force, status=lambda s: status.update(s))
        if not no_verify:
            status.update("checking the engine against PyTorch")
            quick_verify(engine)
    info = engine.info
    if as_json:
        click.echo(json.dumps({"engine": str(engine.engine_path), "reused": reused, "build": info}, indent=2))
    else:
        console.print(f"{'reused' if reused else 'built'} [bold]{engine.engine_path}[/]")
        console.print(
            f"  {info['tensorrt']['module']} {info['tensorrt']['version']}, {info['gpu']['sm']}, "
            f"{info['engine']['bytes'] / 2**20:.1f} MiB, parse {info['parse_seconds']} s, build {info['build_seconds']} s"
        )
        if info.get("decoder"):
            d = info["decoder"]
            console.print(f"  VAE decoder {d['engine']['file']}: {d['engine']['bytes'] / 2**20:.1f} MiB, "
                          f"parse {d['parse_seconds']} s, build {d['build_seconds']} s", highlight=False)
    check = info.get("verify")
    if check and not check["ran"]:
        err_console.print(f"[yellow]warning:[/] the engine was built but not checked: {check['reason']}", soft_wrap=True)
    elif check and not as_json:
        console.print(f"  vs PyTorch: rel L2 {check['rel_l2']:.2e}, PSNR {check['psnr_db']:.1f} dB"
                      + (f"; decoder rel L2 {check['decoder']['rel_l2']:.2e}" if check.get("decoder") else "")
                      + f": {'[green]pass[/]' if check['passed'] else '[red]FAIL[/]'}")
    if check and check["ran"] and not check["passed"]:
        sys.exit(EXIT_VERIFY_FAILED)


@main.command(epilog=EPILOG)
@click.argument("artifact", type=click.Path(file_okay=False))
@click.option("--backends", default="torch,ort", show_default=True, help="Comma list of torch, graph (CUDA graph, --device cuda), ort, trt.")
@click.option("--atol", multiple=True, help="[OUTPUT:]X elementwise absolute tolerance (default per dtype).")
@click.option("--rtol", multiple=True, help="[OUTPUT:]X elementwise relative tolerance (default per dtype).")
@click.option("--seed", default=0, show_default=True, help="Seed of the inputs.")
@click.option("--device", default="cpu", show_default=True, help="Device of the PyTorch reference.")
@click.option("--save-io", type=click.Path(file_okay=False), help="Save inputs/outputs as Polygraphy JSON here.")
@click.option("--engine", type=click.Path(), help="Engine folder for the trt backend (default: the artifact's newest usable one).")
@click.option("--sample", "sample_steps", type=int, default=0, help="Also sample 4 whole images with N sampler steps on "
              "torch and every other backend and compare them as images (PSNR >= 40 dB fp32, 30 fp16, 25 bf16).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@_handle_errors
def verify(artifact, backends, atol, rtol, seed, device, save_io, engine, sample_steps, as_json) -> None:
    """Run an artifact through PyTorch and other backends on the same inputs and compare (exit 3 on failure)."""
    from .errors import EXIT_VERIFY_FAILED
    from .verify.compare import parse_tolerance, verify as run_verify

    names = [b.strip() for b in backends.split(",") if b.strip()]
    if sample_steps < 0:
        raise InputError(f"--sample must be >= 1 (sampler steps), got {sample_steps}")
    report = run_verify(artifact, names, parse_tolerance(atol, "atol"), parse_tolerance(rtol, "rtol"), save_io, seed,
                        device, engine)
    if sample_steps:
        from .verify.samples import sample_parity

        others = [n for n in names if n != "torch"]
        with err_console.status(f"sampling {sample_steps} steps on torch and {', '.join(others)}"):
            report["samples"] = sample_parity(artifact, others, seed, sample_steps, device=device, engine=engine)
        report["passed"] = report["passed"] and report["samples"]["passed"]
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        tol = report["tolerances"]
        table = Table(title=f"verify {report['model']} ({report['dtype']}, {report['scan']} scan) inputs {report['inputs']['x']}")
        for col in ("output", "pair", "max abs", "max rel", "rel L2", "cosine", "PSNR", "pass"):
            table.add_column(col, no_wrap=True)
        for r in report["comparisons"]:
            table.add_row(
                r["output"], f"{r['backend']}/{r['reference']}", f"{r['max_abs']:.2e}", f"{r['max_rel']:.2e}",
                f"{r['rel_l2']:.2e}", f"{r['cosine']:.6f}", f"{r['psnr_db']:.1f}", "[green]yes[/]" if r["passed"] else "[red]NO[/]",
            )
        console.print(table)
        console.print(f"tolerances: rel L2 <= {tol['rel_l2']}, |a-b| <= {tol['atol']} + {tol['rtol']}*|ref|")
        if "decoder" in report:
            d, dtol = report["decoder"], report["decoder"]["tolerances"]
            console.print(f"images: the VAE decoder on latents {d['inputs']['latents']} (reference: {d['vae']} in "
                          f"PyTorch); tolerances: rel L2 <= {dtol['rel_l2']}, |a-b| <= {dtol['atol']} + "
                          f"{dtol['rtol']}*|ref|", highlight=False, soft_wrap=True)
        if "polygraphy" in report:
            console.print(f"reproduce without dimexport:\n  {report['polygraphy']}", soft_wrap=True)
            if "polygraphy" in report.get("decoder", {}):
                console.print(f"  {report['decoder']['polygraphy']}", soft_wrap=True)
        if "samples" in report:
            s = report["samples"]
            table = Table(title=f"samples: {s['settings']['count']} images, {s['settings']['sampler']} "
                                f"{s['settings']['steps']} steps, guidance {s['settings']['guidance']}, seed {s['settings']['seed']}")
            decoded = any("decoded_psnr_db" in r for r in s["comparisons"])
            for col in ("pair", "PSNR", "max abs", *(["decoded PSNR"] if decoded else []), "pass"):
                table.add_column(col, no_wrap=True)
            for r in s["comparisons"]:
                extra = [f"{r['decoded_psnr_db']:.1f} dB ({r['decoder']})"] if decoded else []
                table.add_row(f"{r['backend']}/{r['reference']}", f"{r['psnr_db']:.1f} dB (>= {s['min_psnr_db']})",
                              f"{r['max_abs']:.2e}", *extra, "[green]yes[/]" if r["passed"] else "[red]NO[/]")
            console.print(table)
    if not report["passed"]:
        sys.exit(EXIT_VERIFY_FAILED)


def _vae_decoder(cfg, vae: str | None, device: str):
    """--vae's decoder (the SD VAE in torch) for a latent model, else None."""
    if not vae or cfg.latent_factor == 1:
        return None
    from .models.vae import load_vae
    from .runtime.decoder import TorchDecoder

    return TorchDecoder(load_vae(vae, cfg), device)


def _own_decoder(den, backend: str, artifact: str | None, engine: str | None, device: str, upsample: int = 1):
    """An ort/trt artifact's own decoder (export --vae) for a latent model, at the resolution sampled (--upsample:
    the decoder of the export at m x beside it); None when there is none."""
    from .runtime.decoder import has_decoder, load_decoder
    from .runtime.denoiser import sibling_artifact

    if den.cfg.latent_factor == 1 or backend not in ("ort", "trt") or artifact is None or not has_decoder(artifact):
        return None
    if upsample == 1:
        return load_decoder(backend, den.artifact, engine, device)
    return load_decoder(backend, sibling_artifact(den.artifact, den.resolution * upsample), None, device)


@main.command(epilog=EPILOG)
@_denoiser_options
@click.option("--classes", default="0-9", show_default=True, help="Class ids: ranges and lists, e.g. 0-9 or 1,3,5.")
@click.option("--per-class", default=8, show_default=True, help="Images per class (one grid row per class).")
@click.option("--sampler", type=click.Choice(SAMPLERS),
              help="Default: the model's official one (DiM: DPM-Solver fast, order 3; DiS: DDPM).")
@click.option("--steps", type=int, help="Network calls (DPM-Solver) or levels (DDIM/DDPM); default: the model's (50 / 250).")
@click.option("--cfg", "guidance", type=float, help="Guidance in the family's form (DiM: s of eps_c+s(eps_c-eps_u); DiS: w); default: the official one.")
@click.option("--seed", default=0, show_default=True, help="Seed of the noise (and of the random weights).")
@click.option("--resolution", type=int, help="Image side in pixels (default: native; ort/trt: the artifact's).")
@click.option("--upsample", type=click.Choice(["1", "2", "3"]), default="1", show_default=True,
              help="Sample at 2x or 3x the resolution without training (DiM's Upsample Guidance; ort/trt: the same export at that resolution beside the artifact).")
@click.option("--upsample-guidance", "theta", type=float, default=1.0, show_default=True,
              help="Weight of the Upsample Guidance correction (0: plain sampling at the larger grid).")
@click.option("--device", default="cpu", show_default=True, help="Device of the torch/graph backend and the sampler.")
@click.option("--dtype", type=click.Choice(DTYPE_NAMES), default="fp32", show_default=True, help="torch/graph backend dtype.")
@click.option("--batch", "max_batch", type=int, help="Largest batch per network call (default: all at once, within the backend's range).")
@click.option("--vae", type=click.Path(), help="Latent models: the SD VAE that decodes the latents into images, a "
                                               "diffusers AutoencoderKL folder or its weights file (nothing is "
                                               "downloaded), in PyTorch. ort/trt: default the artifact's own "
                                               "decoder (export --vae).")
@click.option("--latent-preview", is_flag=True, help="Latent models without --vae: grid a min-max preview of latent "
                                                     "channels 0-2 instead of images.")
@click.option("-o", "--output", "out_png", default="samples.png", show_default=True, help="Grid PNG.")
@click.option("--save-npy", type=click.Path(dir_okay=False), help="Also save the samples (N, C, H, W float32) as .npy "
                                                                  "(latents for latent models).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary on stdout.")
@_handle_errors
def sample(model_id, checkpoint, backend, artifact, engine, classes, per_class, sampler, steps, guidance, seed,
           resolution, upsample, theta, device, dtype, max_batch, vae, latent_preview, out_png, save_npy,
           as_json) -> None:
    """Generate a grid of images, one row per class, with the model's official sampler and guidance.

    The same seed gives the same images on the same backend. Pixel models are shown directly; latent models are
    decoded by the SD VAE given with --vae (or previewed with --latent-preview)."""
    import numpy as np
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .configs import get_config
    from .diffusion.images import LATENT_PREVIEW_NOTE, grid, save_png, viewable
    from .diffusion.pipeline import parse_classes, sample as run_sample
    from .models.checkpoint import weights_label
    from .runtime.decoder import has_decoder
    from .runtime.denoiser import load_denoiser

    cfg = get_config(model_id)
    if resolution is not None:
        cfg.grid(resolution)
    ids = parse_classes(classes, cfg) if cfg.num_classes else []
    if per_class < 1:
        raise InputError(f"--per-class must be >= 1, got {per_class}")
    if steps is not None and steps < 1:
        raise InputError(f"--steps must be >= 1, got {steps}")
    if max_batch is not None and max_batch < 1:
        raise InputError(f"--batch must be >= 1, got {max_batch}")
    exported = backend in ("ort", "trt") and artifact is not None
    # ort/trt decode with the artifact's own decoder (export --vae) unless --vae or --latent-preview says otherwise
    own_decoder = exported and not (vae or latent_preview) and has_decoder(artifact)
    if cfg.latent_factor == 1 and (vae or latent_preview):
        raise InputError(f"{cfg.id} samples pixels: drop --vae / --latent-preview")
    if cfg.latent_factor > 1 and not (vae or latent_preview or own_decoder):
        raise InputError(f"{cfg.id} samples SD-VAE latents: pass --vae PATH (a diffusers AutoencoderKL folder such as "
                         "stabilityai/sd-vae-ft-ema saved locally, or its weights file) to decode them into images, "
                         "or --latent-preview for a preview of the latent channels"
                         + ("; or export the artifact with --vae PATH so that it carries the decoder" if exported else ""))
    vae_decoder = _vae_decoder(cfg, vae, device)  # before the denoiser: a bad VAE fails fast
    den = load_denoiser(backend, model_id, checkpoint, artifact, engine, resolution, device, dtype, seed)
    decoder = None if latent_preview else vae_decoder or _own_decoder(den, backend, artifact, engine, device,
                                                                     int(upsample))
    if max_batch is not None:
        den.max_batch = min(max_batch, den.max_batch or max_batch)
    labels = torch.tensor([c for c in ids for _ in range(per_class)]) if ids else None
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task(f"sampling {cfg.id} ({den.name}, {den.dtype}, {den.device})", total=None)
        result = run_sample(den, labels, n=per_class, sampler=sampler, steps=steps, guidance=guidance, seed=seed,
                            progress=lambda done, total: bar.update(task, completed=done, total=total),
                            upsample=int(upsample), theta=theta)
    rows = len(ids) if ids else 1
    if decoder is not None:
        started = time.perf_counter()
        images = decoder(result.samples)
        result.settings["decode_s"] = round(time.perf_counter() - started, 4)
        result.settings["decoder"] = decoder.name
    else:
        images = viewable(result.samples, cfg)
    path = save_png(grid(images, rows), out_png)
    if save_npy:
        np.save(save_npy, result.samples.numpy())
    calls = result.call_ms
    summary = dict(result.settings, output=str(path), npy=save_npy, calls=len(calls), total_s=round(result.total_s, 4),
                   call_ms_median=round(statistics.median(calls), 3), call_ms_first=round(calls[0], 3),
                   weights="artifact" if artifact else weights_label(cfg, checkpoint, seed),
                   vae=vae or (den.artifact.manifest["decoder"]["vae"]["path"] if own_decoder else None),
                   preview=LATENT_PREVIEW_NOTE if cfg.latent_factor > 1 and decoder is None else None)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    s = summary
    console.print(f"{s['count']} images of {s['model']} at {s['resolution']} px: {s['sampler']}, {s['steps']} steps, "
                  f"guidance {s['guidance']}, seed {s['seed']}, {s['backend']} {s['dtype']} on {s['device']}", highlight=False, soft_wrap=True)
    console.print(f"{s['calls']} network calls in {s['total_s']:.2f} s (median {s['call_ms_median']:.1f} ms per call, "
                  f"first {s['call_ms_first']:.1f} ms) -> {path}", highlight=False, soft_wrap=True)
    if decoder is not None:
        console.print(f"decoded by the VAE {s['vae']} ({s['decoder']}) in {s['decode_s']:.2f} s", highlight=False,
                      soft_wrap=True)
    if checkpoint is None and artifact is None and not cfg.weights:
        err_console.print(f"note: no --checkpoint: random weights (seed {seed}), so the images are noise", highlight=False, soft_wrap=True)
    if s["preview"]:
        err_console.print(f"note: {s['preview']}", highlight=False, soft_wrap=True)


@main.command("bench", epilog=EPILOG)
@click.option("--model", "model_id", required=True, help="Model id (see `dimexport models`).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Official checkpoint (default: embedded trained weights, else seeded random ones).")
@click.option("--resolution", type=int, help="Image side in pixels (default: native).")
@click.option("--batch", default="1,8", show_default=True, help="Comma-separated batch sizes.")
@click.option("--dtype", type=click.Choice(DTYPE_NAMES), help="Default: fp16 on the GPU, fp32 on the CPU.")
@click.option("--device", help="Default: cuda when a GPU is visible, else cpu.")
@click.option("--backends", default="eager,graph,compile,ort,trt", show_default=True,
              help="Comma list of eager, graph (CUDA graph), compile (torch.compile), ort, trt; those that cannot run "
                   "here are reported with the reason.")
@click.option("--baselines", default="", help="Comma list of official (mamba-ssm block stack), dit (diffusers DiT of "
                                              "matching size), timed in the same run.")
@click.option("--steps", type=int, default=0, show_default=True, help="Also time a whole guided sampling loop of this "
                                                                     "many steps per backend (batch images).")
@click.option("--warmup", type=int, default=3, show_default=True, help="Untimed calls first.")
@click.option("--repeat", type=int, default=20, show_default=True, help="Timed calls (p50/p90/p99 over them).")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False),
              help="Write bench.json and bench.png (images/s chart) here, exports and engines under exports/ "
                   "(default: no report files, exports in dimexport-out).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report on stdout.")
@_handle_errors
def bench_cmd(model_id, checkpoint, resolution, batch, dtype, device, backends, baselines, steps, warmup, repeat,
              out_dir, as_json) -> None:
    """Time one denoiser call (and a whole sample) on each backend, beside DiT and the mamba-ssm stack."""
    from pathlib import Path

    import torch

    from .verify.speed import bar_chart, run_bench

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or ("fp16" if device.startswith("cuda") else "fp32")
    try:
        batches = [int(b) for b in batch.split(",")]
    except ValueError:
        raise InputError(f"--batch {batch!r} must be comma-separated integers such as 1,8") from None
    if steps < 0:
        raise InputError(f"--steps must be >= 0, got {steps}")
    names = lambda text: [n.strip() for n in text.split(",") if n.strip()]  # noqa: E731
    with err_console.status("benchmarking") as status:
        report = run_bench(model_id, batches, names(backends), names(baselines), resolution, dtype, device, steps,
                           checkpoint, str(Path(out_dir) / "exports") if out_dir else "dimexport-out", warmup=warmup,
                           repeat=repeat, progress=lambda m: status.update(m))
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "bench.json").write_text(json.dumps(report, indent=1))
        bar_chart(report, Path(out_dir) / "bench.png")
    if as_json:
        click.echo(json.dumps(report, indent=1))
        return
    env = report["environment"]
    console.print(f"{report['model']} at {report['resolution']} px, {report['dtype']} on "
                  f"{env.get('gpu', env.get('cpu'))}; torch {env['torch']}; p50 of {report['repeat']} calls after "
                  f"{report['warmup']} warm-up", highlight=False, soft_wrap=True)
    table = Table()
    for col in ("name", "batch", "what", "p50 ms", "p90 ms", "p99 ms", "images/s", "vs eager", "peak MiB", "note"):
        table.add_column(col)
    skipped = {}
    for r in report["rows"]:
        if r["skipped"]:
            skipped.setdefault(r["name"], r["skipped"])
            continue
        table.add_row(r["name"], str(r["batch"]), r["what"], f"{r['p50']:.2f}", f"{r['p90']:.2f}", f"{r['p99']:.2f}",
                      f"{r['images_per_s']:.1f}", "" if r["speedup_vs_eager"] is None
                      else f"{r['speedup_vs_eager']:.2f}x", "" if r["peak_mib"] is None
                      else f"{r['peak_mib']:.0f}", r["note"])
    console.print(table)
    for name, why in skipped.items():
        console.print(f"skipped {name}: {why}", highlight=False, soft_wrap=True)

@main.command(epilog=EPILOG)
@click.option("--recipe", "recipe_path", required=True, type=click.Path(dir_okay=False),
              help="Recipe YAML (see recipes/): model, data, optimiser, schedule of logs and checkpoints.")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False),
              help="Run folder: checkpoints, train_log.jsonl, loss.png, sample grids (default: runs/<recipe name>).")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in the run folder (exactly).")
@click.option("--device", type=click.Choice(["cuda", "cpu"]), help="Default: cuda when a GPU is visible, else cpu.")
@click.option("--max-steps", type=int, help="Stop after this many more steps (the recipe's total still applies).")
@click.option("--short", is_flag=True, help="Apply the recipe's `shortened` overrides (a quick run, as CI does).")
@click.option("--vae", type=click.Path(), help="VAE (diffusers AutoencoderKL folder or SD VAE weights file) that "
              "encodes an image folder for a latent model, once, into <run folder>/features/ (or the recipe's "
              "feature_cache); overrides the recipe's vae.")
@_handle_errors
def train(recipe_path, out_dir, resume, device, max_steps, short, vae) -> None:
    """Train a model from a recipe: AdamW, warm-up, EMA, bf16 on the GPU, checkpoints in the official formats.

    Several GPUs or nodes: start it with torchrun (DistributedDataParallel; the recipe's batch is the global one)."""
    import os

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .train.recipe import Recipe
    from .train.trainer import LOG_NAME, Trainer

    if max_steps is not None and max_steps < 1:
        raise InputError(f"--max-steps must be >= 1, got {max_steps}")
    recipe = Recipe.load(recipe_path, short=short)
    if vae:
        recipe = Recipe.from_dict(dict(recipe.to_dict(), vae=vae), source=recipe_path)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeRemainingColumn())
    with Progress(*columns, console=err_console, disable=os.environ.get("RANK", "0") != "0") as bar:
        encoding = []  # the encoding task, once the VAE starts

        def encoded(done: int, total: int) -> None:
            if not encoding:
                encoding.append(bar.add_task(f"encoding images with the VAE {recipe.vae}", total=total, info=""))
            bar.update(encoding[0], completed=done)

        trainer = Trainer(recipe, out_dir or f"runs/{recipe.name}", device, encode_progress=encoded)
        if trainer.features_path and trainer.ctx.main:
            bar.console.print(f"features {trainer.features_path}", highlight=False, soft_wrap=True)
        task = bar.add_task(f"training {recipe.model} ({trainer.ctx.device}, {trainer.ctx.world} process(es))",
                            total=recipe.steps, completed=0, info="")
        trainer.progress = lambda rec: bar.update(
            task, completed=rec["step"], info=f"loss {rec['loss']:.4f}  {rec['steps_per_s']:.1f} steps/s")
        try:
            last = trainer.run(resume=resume, max_steps=max_steps)
        except BaseException:
            trainer.close(ok=False)
            raise
        trainer.close()
    if trainer.ctx.main:
        console.print(f"step {trainer.step}/{recipe.steps}; log {trainer.out / LOG_NAME}, loss curve "
                      f"{trainer.out / 'loss.png'}; weights {trainer.weights_path() if last else 'not saved'}",
                      highlight=False, soft_wrap=True)


@main.command("serve", epilog=EPILOG)
@_denoiser_options
@click.option("--device", default="cpu", show_default=True, help="Device of the torch/graph backend.")
@click.option("--dtype", type=click.Choice(DTYPE_NAMES), default="fp32", show_default=True, help="torch/graph backend dtype.")
@click.option("--http-port", default=8000, show_default=True)
@click.option("--grpc-port", default=8001, show_default=True)
@click.option("--metrics-port", default=8002, show_default=True)
@click.option("--queue-delay-us", default=2000, show_default=True, help="How long Triton's dynamic batcher waits to fill a denoiser batch.")
@click.option("--vae", type=click.Path(), help="Latent models: the SD VAE (diffusers AutoencoderKL folder or weights "
              "file) that decodes <model>-sample's latents into images; ort/trt artifacts exported with --vae carry "
              "their own decoder.")
@_handle_errors
def serve_cmd(model_id, checkpoint, backend, artifact, engine, device, dtype, http_port, grpc_port, metrics_port,
              queue_delay_us, vae) -> None:
    """Serve the model through NVIDIA Triton (PyTriton): <model> (one denoiser call, dynamically batched) and
    <model>-sample (class id, seed [, steps, guidance] -> image; latent models need a VAE decoder). Runs until
    interrupted."""
    from .configs import get_config
    from .runtime.denoiser import load_denoiser
    from .serve import ServeConfig, serve

    cfg = get_config(model_id)
    if cfg.latent_factor == 1 and vae:
        raise InputError(f"{cfg.id} samples pixels: drop --vae")
    vae_decoder = _vae_decoder(cfg, vae, device)
    den = load_denoiser(backend, model_id, checkpoint, artifact, engine, None, device, dtype)
    decoder = vae_decoder or _own_decoder(den, backend, artifact, engine, device)
    err_console.print(f"serving {den.cfg.id} ({den.name}, {den.dtype}, {den.device}) on http :{http_port}, "
                      f"grpc :{grpc_port}, metrics :{metrics_port}", highlight=False)
    if cfg.latent_factor > 1 and decoder is None:
        err_console.print(f"note: no {cfg.id}-sample endpoint: {cfg.id} samples SD-VAE latents; pass --vae PATH (or "
                          "serve an artifact exported with --vae) to serve whole images", highlight=False)
    serve(den, ServeConfig(http_port, grpc_port, metrics_port, queue_delay_us), decoder=decoder)


if __name__ == "__main__":
    main()
