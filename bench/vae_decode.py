"""Time of the SD VAE's decoder on the GPU (issue "Beyond the trained resolution" §2): the full-width AutoencoderKL of
dimexport.models.vae (random weights: time does not depend on them) decoding batch-8 latents of 256^2 and 512^2
images, eager and as a CUDA graph, fp32 (TF32 off) / fp16 / bf16; CUDA events after warm-up, median of 20 calls, and a
FLOP count (torch.utils.flop_counter) so each number stands beside its compute floor at the GEMM peak measured here.

  python3 bench/vae_decode.py --json out/vae_decode.json --md out/vae_decode.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from dimexport.models.vae import SCALE, SD_VAE_CONFIG  # noqa: E402
from dimexport.verify.speed import environment, time_calls  # noqa: E402
from profile_layer import gemm_peak, graph_ms  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def median_ms(fn, device: torch.device, reps: int = 20) -> float:
    """Median time of fn() after three warm-up calls (CUDA events on the GPU)."""
    return statistics.median(time_calls(fn, device, warmup=3, repeat=reps))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolutions", default="256,512")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--dtypes", default="fp16,bf16,fp32")
    ap.add_argument("--device", default="cuda", help="cuda (cpu: a quick check of the script, no graph)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--md", type=Path)
    args = ap.parse_args()
    device = torch.device(args.device)
    from diffusers import AutoencoderKL
    from torch.utils.flop_counter import FlopCounterMode

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    rows = []
    for name in args.dtypes.split(","):
        dtype = DTYPES[name]
        vae = AutoencoderKL(**SD_VAE_CONFIG).to(device, dtype).eval()
        peak = gemm_peak(dtype, device)
        for res in (int(r) for r in args.resolutions.split(",")):
            z = torch.randn(args.batch, 4, res // 8, res // 8, device=device, dtype=dtype)
            decode = lambda latents: vae.decode(latents / SCALE).sample  # noqa: E731
            with torch.inference_mode():
                with FlopCounterMode(display=False) as counter:
                    decode(z)
                flops = counter.get_total_flops()
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()  # this row's decode, not the probes before it
                eager = median_ms(lambda: decode(z), device, reps=20 if device.type == "cuda" else 2)
                replay = graph_ms(decode, (z,)) if device.type == "cuda" else eager
                peak_mib = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0
            row = dict(dtype=name, resolution=res, batch=args.batch, eager_ms=round(eager, 2),
                       graph_ms=round(replay, 2), images_per_s=round(args.batch / replay * 1e3, 1),
                       tflop=round(flops / 1e12, 2), gemm_peak_tflops=round(peak / 1e12, 1),
                       floor_ms=round(flops / peak * 1e3, 2), peak_mib=round(peak_mib))
            rows.append(row)
            print(json.dumps(row), flush=True)
            write(args, rows, device)  # each row as soon as it is measured: a time limit keeps what finished
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()


def write(args: argparse.Namespace, rows: list[dict], device: torch.device) -> None:
    env = environment(device)
    if args.json:
        args.json.write_text(json.dumps(dict(environment=env, rows=rows), indent=1))
    if args.md:
        lines = [f"# SD VAE decode (full width, batch {args.batch}) on {env.get('gpu')}", "",
                 f"Environment: {', '.join(f'{k} {v}' for k, v in env.items())}", "",
                 "| dtype | image | eager ms | graph ms | images/s | TFLOP | floor ms (at the measured GEMM peak) "
                 "| peak MiB |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['dtype']} | {r['resolution']}² | {r['eager_ms']} | {r['graph_ms']} | {r['images_per_s']} | "
                  f"{r['tflop']} | {r['floor_ms']} ({r['gemm_peak_tflops']} TFLOP/s) | {r['peak_mib']} |" for r in rows]
        args.md.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
