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
from .configs import DTYPE_NAMES
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
                "checkpoint_format": cfg.checkpoint_format, "paper": cfg.paper,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="dimexport models")
    for col in ("id", "family", "params", "D", "blocks", "resolution", "input", "L", "checkpoint"):
        table.add_column(col, no_wrap=col != "checkpoint")
    for r in rows:
        table.add_row(
            r["id"], r["family"], f"{r['params'] / 1e6:.2f}M", str(r["hidden"]), str(r["blocks"]),
            f"{r['resolution']}²", "×".join(map(str, r["input"])), str(r["seq_len"]),
            r["checkpoint_format"].split(":")[0],
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
    from .models import DTYPES, build_model, cast_model, cuda_graphed, example_inputs
    from .models.checkpoint import load_checkpoint

    cfg = get_config(model_id)
    res = resolution or cfg.resolution
    cfg.grid(res)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EnvironmentProblem("--device cuda needs a CUDA GPU visible to torch; use --device cpu")
    model = load_checkpoint(cfg, checkpoint, resolution) if checkpoint else build_model(cfg, resolution, seed=seed)
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
@click.option("--random-init", is_flag=True, help="Export random weights (seeded); the default without --checkpoint.")
@click.option("--seed", default=0, show_default=True, help="Seed of --random-init.")
@click.option("--resolution", type=int, help="Image side in pixels; fixed per export (the scan orders depend on it).")
@click.option("--batch", default="1:1:8", show_default=True, help="Dynamic batch min:opt:max (or N).")
@click.option("--dtype", type=click.Choice(DTYPE_NAMES), default="fp32", show_default=True,
              help="Type the graph itself carries (TensorRT 11 is strongly typed); A, D, dt bias and norm statistics stay fp32.")
@click.option("--scan", type=click.Choice(["plugin", "portable"]), default="plugin", show_default=True,
              help="plugin: one trt.plugins::DimSelectiveScan node per scan; portable: standard ONNX ops only.")
@click.option("--opset", type=int, help="ONNX opset, 18..23 (default 20; 22 for bf16).")
@click.option("-o", "--output", "out_dir", default="dimexport-out", show_default=True, help="Artifact root folder.")
@click.option("--force", is_flag=True, help="Re-export even if a matching artifact exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@_handle_errors
def export_cmd(model_id, checkpoint, random_init, seed, resolution, batch, dtype, scan, opset, out_dir, force, as_json):
    """Export a model to ONNX into a content-addressed artifact folder (reused when nothing changed)."""
    from .configs import get_config
    from .export.exporter import ExportSpec, export, parse_batch

    if checkpoint and random_init:
        raise InputError("give either --checkpoint or --random-init, not both")
    cfg = get_config(model_id)
    spec = ExportSpec(model_id, resolution or cfg.resolution, dtype, scan, parse_batch(batch), checkpoint, seed, opset)
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


@main.command("build", epilog=EPILOG)
@click.option("--model", "model_id", required=True, help="Model id (see `dimexport models`).")
@click.option("--fp32", "dtype", flag_value="fp32", default=True, help="Export and build in fp32 (TF32 off) [default].")
@click.option("--fp16", "dtype", flag_value="fp16", help="Export in fp16; the engine is strongly typed from it.")
@click.option("--bf16", "dtype", flag_value="bf16", help="Export in bf16; the engine is strongly typed from it.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Official checkpoint (default: seeded random weights).")
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
@click.option("--no-verify", is_flag=True, help="Skip the quick parity check against PyTorch after the build.")
@click.option("-o", "--output", "out_dir", default="dimexport-out", show_default=True, help="Artifact root folder.")
@click.option("--force", is_flag=True, help="Rebuild the engine even if a matching one exists (the export stays cached).")
@click.option("--json", "as_json", is_flag=True, help="Print build.json as JSON.")
@_handle_errors
def build_cmd(model_id, dtype, checkpoint, seed, resolution, batch, scan, opt_level, timing_cache, workspace_gib,
              plugin_lib, trt_module, no_verify, out_dir, force, as_json):
    """Export (cached), build a TensorRT engine with the scan plugin, and check it against PyTorch."""
    from .configs import get_config
    from .errors import EXIT_VERIFY_FAILED
    from .export.exporter import ExportSpec, parse_batch
    from .trt.build import BuildOptions, build
    from .verify.compare import quick_verify

    cfg = get_config(model_id)
    spec = ExportSpec(model_id, resolution or cfg.resolution, dtype, scan, parse_batch(batch), checkpoint, seed)
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
    check = info.get("verify")
    if check and not check["ran"]:
        err_console.print(f"[yellow]warning:[/] the engine was built but not checked: {check['reason']}", soft_wrap=True)
    elif check and not as_json:
        console.print(f"  vs PyTorch: rel L2 {check['rel_l2']:.2e}, PSNR {check['psnr_db']:.1f} dB: "
                      f"{'[green]pass[/]' if check['passed'] else '[red]FAIL[/]'}")
    if check and check["ran"] and not check["passed"]:
        sys.exit(EXIT_VERIFY_FAILED)


@main.command(epilog=EPILOG)
@click.argument("artifact", type=click.Path(file_okay=False))
@click.option("--backends", default="torch,ort", show_default=True, help="Comma list of torch, ort, trt.")
@click.option("--atol", multiple=True, help="[OUTPUT:]X elementwise absolute tolerance (default per dtype).")
@click.option("--rtol", multiple=True, help="[OUTPUT:]X elementwise relative tolerance (default per dtype).")
@click.option("--seed", default=0, show_default=True, help="Seed of the inputs.")
@click.option("--device", default="cpu", show_default=True, help="Device of the PyTorch reference.")
@click.option("--save-io", type=click.Path(file_okay=False), help="Save inputs/outputs as Polygraphy JSON here.")
@click.option("--engine", type=click.Path(), help="Engine folder for the trt backend (default: the artifact's newest usable one).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@_handle_errors
def verify(artifact, backends, atol, rtol, seed, device, save_io, engine, as_json) -> None:
    """Run an artifact through PyTorch and other backends on the same inputs and compare (exit 3 on failure)."""
    from .errors import EXIT_VERIFY_FAILED
    from .verify.compare import parse_tolerance, verify as run_verify

    report = run_verify(
        artifact, [b.strip() for b in backends.split(",") if b.strip()], parse_tolerance(atol, "atol"),
        parse_tolerance(rtol, "rtol"), save_io, seed, device, engine,
    )
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
        if "polygraphy" in report:
            console.print(f"reproduce without dimexport:\n  {report['polygraphy']}", soft_wrap=True)
    if not report["passed"]:
        sys.exit(EXIT_VERIFY_FAILED)


if __name__ == "__main__":
    main()
