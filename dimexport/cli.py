"""The `dimexport` command line.

Exit codes: 0 success; 2 usage or input error (unknown model, bad resolution, checkpoint that does
not fit, wrong dtype for the device); 3 a parity check failed; 4 the environment lacks something
(a GPU, TensorRT, the plugin library, a package).
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
from .errors import EXIT_ENVIRONMENT, DimexportError, EnvironmentProblem, InputError

console = Console()
err_console = Console(stderr=True)

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
EPILOG = "Exit codes: 0 ok, 2 usage or input error, 3 verification failed, 4 environment problem."


def _handle_errors(fn: Callable) -> Callable:
    """Turn dimexport errors into a one-paragraph message and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DimexportError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
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
    "scan_library, onnxruntime_extensions, polygraphy.",
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
@click.option("--dtype", type=click.Choice(list(DTYPES)), default="fp32", show_default=True)
@click.option("--repeat", default=3, show_default=True, help="Timed forward passes (after one warm-up).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_handle_errors
def forward(model_id, checkpoint, seed, resolution, batch, device, dtype, repeat, as_json) -> None:
    """Run the denoiser forward pass on seeded inputs: output shape, time and memory."""
    import torch

    from .configs import get_config
    from .models import build_model, cast_model, example_inputs
    from .models.checkpoint import load_checkpoint

    cfg = get_config(model_id)
    res = resolution or cfg.resolution
    cfg.grid(res)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EnvironmentProblem("--device cuda needs a CUDA GPU visible to torch; use --device cpu")
    if dtype == "fp16" and not device.startswith("cuda"):
        raise InputError("fp16 runs on CUDA only here; use --dtype fp32 or bf16 on the CPU")
    model = load_checkpoint(cfg, checkpoint, resolution) if checkpoint else build_model(cfg, resolution, seed=seed)
    model = cast_model(model, getattr(torch, DTYPES[dtype])).to(device)
    x, t, y = example_inputs(cfg, batch, res, seed, device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    with torch.inference_mode():
        for i in range(repeat + 1):
            sync()
            start = time.perf_counter()
            out = model(x, t, y)
            sync()
            if i:
                times.append(time.perf_counter() - start)
    result = {
        "model": cfg.id, "resolution": res, "batch": batch, "device": device, "dtype": dtype,
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


if __name__ == "__main__":
    main()
