"""Benchmark of the fused selective-scan kernel against its roofline floor (issue 4, §4).

Shapes: B in {1, 8, 32}, D in {2048, 3072}, L in {366, 1230, 4494}, N = 16, fp16 I/O, z and
delta_bias on (DiM-L/H at 256², 512², 1024²). Per shape:

  floor = max(8 B/element / copy bandwidth measured in this run, 20 SFU ops/element / 3.9e12 ops/s)

Kernel times are medians of CUDA-graph replays (events around each replay, several calls per graph),
so launch gaps of the host are excluded but the back-to-back launch cost of a real engine is kept.
Calls inside a graph rotate over enough input sets to exceed twice the L2 cache, so L2 does not
flatter the small shapes. Run on the GPU machine:

  python3 bench/scan.py --json bench/results/scan_h100.json --md bench/results/scan_h100.md
  python3 bench/scan.py --variant default=dimexport/lib/libdimexport_scan.so --variant poly8=/path/lib.so

Each --variant (name=path of a libdimexport_scan.so) runs in its own process (the library is loaded
once per process); the first is the reference for the table and the sweeps.

Sweeps of the first variant: lanes per channel forced (DIMEX_SCAN_FORCE_SPLIT, sequence chunks chosen by
the heuristic) on every shape, and sequence chunks forced (DIMEX_SCAN_FORCE_CHUNKS) at B = 1 with the
lanes per channel chosen by the heuristic or forced to 2 or 4.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Optional

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SFU_RATE = 3.9e12  # special-function ops/s of an H100 SXM (FlashAttention-3 paper)
SFU_PER_ELEM = 20
BYTES_PER_ELEM = 8  # fp16 u, delta, z read + out written
SHAPES = [(b, d, l) for b in (1, 8, 32) for d in (2048, 3072) for l in (366, 1230, 4494)]
REFERENCE_SHAPES = [(1, 2048, 366), (8, 2048, 366), (1, 3072, 1230)]
SPLITS = (1, 2, 4, 8, 16)
CHUNKS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
CHUNK_SPLITS = (None, 2, 4)


def copy_bandwidth(nbytes: int = 1 << 30, reps: int = 10, device: str = "cuda") -> float:
    """Copy bandwidth of `device` in bytes/s, counting bytes read plus bytes written (median of `reps` copies after
    three warm-up ones; CUDA events on the GPU)."""
    from dimexport.verify.speed import time_calls

    x = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    y = torch.empty_like(x)
    ms = statistics.median(time_calls(lambda: y.copy_(x), torch.device(device), warmup=3, repeat=reps))
    return 2 * nbytes / (ms * 1e-3)


def floor_us(elems: int, bw: float) -> float:
    return max(elems * BYTES_PER_ELEM / bw, elems * SFU_PER_ELEM / SFU_RATE) * 1e6


def input_sets(batch: int, dim: int, seqlen: int, l2_bytes: int) -> list[dict]:
    from dimexport.ops.testing import realistic_scan_inputs

    per_set = batch * dim * seqlen * BYTES_PER_ELEM
    k = max(2, min(16, math.ceil(2 * l2_bytes / per_set)))
    return [realistic_scan_inputs(batch, dim, seqlen, dtype=torch.float16, device="cuda", seed=seed) for seed in range(k)]


def time_graph(fn, sets: list[dict], est_us: float, replays: int = 7) -> float:
    """Median per-call time (µs) of a CUDA graph that calls fn on the input sets in turn."""
    calls = max(len(sets), min(400, math.ceil(3000.0 / max(est_us, 1.0))))
    calls = math.ceil(calls / len(sets)) * len(sets)
    outs = [torch.empty_like(s["u"]) for s in sets]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for s, o in zip(sets, outs):
            fn(s, o)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            for i in range(calls):
                fn(sets[i % len(sets)], outs[i % len(sets)])
    torch.cuda.current_stream().wait_stream(stream)
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        graph.replay()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) * 1e3 / calls)
    del graph
    return statistics.median(times)


def effective_chunks(seqlen: int, k: int) -> int:
    """Chunks the library runs when k are forced: whole 32-token tiles each (so several k can give one count)."""
    length = math.ceil(math.ceil(seqlen / k) / 32) * 32
    return math.ceil(seqlen / length)


def native_fn(split: Optional[int] = None, chunks: Optional[int] = None):
    from dimexport.ops import _native

    for name, value in (("DIMEX_SCAN_FORCE_SPLIT", split), ("DIMEX_SCAN_FORCE_CHUNKS", chunks)):
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = str(value)

    def fn(s: dict, out: torch.Tensor) -> None:
        _native.scan_cuda(s["u"], s["delta"], s["A"], s["B"], s["C"], s["D"], s["z"], s["delta_bias"], True, False,
                          out=out)

    return fn


def worker(args: argparse.Namespace) -> None:
    """Measure every shape with the library in $DIMEXPORT_SCAN_LIB; print one JSON object."""
    from dimexport.ops import _native
    from dimexport.ops.selective_scan import selective_scan_reference
    from dimexport.ops.testing import token_major_views

    lib = _native.load()
    props = torch.cuda.get_device_properties(0)
    l2 = getattr(props, "L2_cache_size", 50 << 20)
    bw = copy_bandwidth()
    rows = []
    shapes = [tuple(map(int, s.split("x"))) for s in args.shapes.split(",")] if args.shapes else SHAPES
    shapes = shapes[: args.limit] if args.limit else shapes
    for batch, dim, seqlen in shapes:
        elems = batch * dim * seqlen
        fl = floor_us(elems, bw)
        sets = input_sets(batch, dim, seqlen, l2)
        row = dict(batch=batch, dim=dim, seqlen=seqlen, elems=elems, floor_us=fl, sets=len(sets))
        row["us"] = time_graph(native_fn(), sets, fl)
        if args.token_major:
            row["token_major_us"] = time_graph(native_fn(), [token_major_views(s) for s in sets], fl)
        if args.sweep:  # on the layout the table's "auto" column names
            swept = [token_major_views(s) for s in sets] if args.token_major else sets
            row["sweep_layout"] = "token-major" if args.token_major else "contiguous"
            row["split_us"] = {s: time_graph(native_fn(s), swept, fl) for s in SPLITS}
            if batch == 1:
                ks = sorted({effective_chunks(seqlen, k): k for k in reversed(CHUNKS)}.values())
                row["chunk_us"] = {str(s or "auto"): {k: time_graph(native_fn(s, k), swept, fl) for k in ks}
                                   for s in CHUNK_SPLITS}
        native_fn()
        if args.reference and (batch, dim, seqlen) in REFERENCE_SHAPES:
            s0, out = sets[0], torch.empty_like(sets[0]["u"])
            ref = lambda: selective_scan_reference(  # noqa: E731
                s0["u"], s0["delta"], s0["A"], s0["B"], s0["C"], s0["D"], s0["z"], s0["delta_bias"], True, False)
            ref()
            times = []
            for _ in range(3):
                st, en = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                st.record()
                ref()
                en.record()
                en.synchronize()
                times.append(st.elapsed_time(en) * 1e3)
            row["torch_reference_us"] = statistics.median(times)
            # Sanity check of the timed kernel against the reference (fp16 output: ~1e-3 expected).
            native_fn()(s0, out)
            expect = ref().double()
            row["rel_err_vs_reference"] = ((out.double() - expect).norm() / expect.norm()).item()
        rows.append(row)
        print(f"  {args.tag}: B={batch} D={dim} L={seqlen}: {row['us']:.1f} us, floor {fl:.1f} us "
              f"({100 * fl / row['us']:.0f}%)", file=sys.stderr, flush=True)
        del sets
        torch.cuda.empty_cache()
    from dimexport.libraries import scan_library_path

    print(json.dumps(dict(tag=args.tag, lib=str(scan_library_path()), abi=lib.dimex_scan_abi_version(),
                          copy_bw=bw, rows=rows)))


def environment() -> dict:
    def run(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "n/a"

    props = torch.cuda.get_device_properties(0)
    nvcc = [line for line in run(["nvcc", "--version"]).splitlines() if "release" in line]
    return dict(
        device=props.name, sms=props.multi_processor_count,
        driver=run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]),
        torch=torch.__version__, torch_cuda=torch.version.cuda, nvcc=nvcc[0].strip() if nvcc else "nvcc n/a",
        python=platform.python_version(),
    )


def markdown(env: dict, results: list[dict]) -> str:
    base = results[0]
    bw = base["copy_bw"]
    lines = [
        "# Selective-scan kernel: time against the floor (issue 4)",
        "",
        f"Device {env['device']} ({env['sms']} SMs), driver {env['driver']}, torch {env['torch']} "
        f"(CUDA {env['torch_cuda']}), {env['nvcc']}, Python {env['python']}.",
        "",
        f"N = 16, fp16 I/O, z and delta_bias on. Copy bandwidth measured in this run: {bw / 1e12:.2f} TB/s "
        f"(read + write). Floor = max(8 B/elem / copy BW, 20 SFU ops/elem / 3.9e12/s) = "
        f"{1e12 * max(8 / bw, 20 / SFU_RATE):.2f} ps/elem. Times: median per call over CUDA-graph replays "
        "with rotating input sets (> 2x L2). % of floor = floor / time (100 % = at the floor).",
        "",
    ]
    head = "| B | D | L | elements | floor µs | " + " | ".join(f"{r['tag']} µs | {r['tag']} % of floor"
                                                          for r in results) + " |"
    lines += [head, "|" + "---|" * (5 + 2 * len(results))]
    for i, row in enumerate(base["rows"]):
        cells = [str(row["batch"]), str(row["dim"]), str(row["seqlen"]), f"{row['elems'] / 1e6:.1f} M",
                 f"{row['floor_us']:.1f}"]
        for r in results:
            rr = r["rows"][i]
            cells += [f"{rr['us']:.1f}", f"{100 * rr['floor_us'] / rr['us']:.0f} %"]
        lines.append("| " + " | ".join(cells) + " |")
    if any("token_major_us" in row for row in base["rows"]):
        tags = [r["tag"] for r in results]
        lines += ["", "Token-major inputs and output (u, delta, z, out as (B, L, D) storage, B and C as (B, L, G, N), "
                  "as DiM's mixer hands them) against contiguous (B, D, L) rows, µs:", "",
                  "| B | D | L | " + " | ".join(f"{t} contiguous | {t} token-major | {t} token-major % of floor"
                                                for t in tags) + " |", "|" + "---|" * (3 + 3 * len(tags))]
        for i, row in enumerate(base["rows"]):
            cells = []
            for r in results:
                rr = r["rows"][i]
                cells += [f"{rr['us']:.1f}", f"{rr['token_major_us']:.1f}",
                          f"{100 * rr['floor_us'] / rr['token_major_us']:.0f} %"]
            lines.append(f"| {row['batch']} | {row['dim']} | {row['seqlen']} | " + " | ".join(cells) + " |")
    auto = lambda row: row["token_major_us" if row.get("sweep_layout") == "token-major" else "us"]  # noqa: E731
    layout = base["rows"][0].get("sweep_layout", "contiguous")
    if any("split_us" in row for row in base["rows"]):
        lines += ["", f"Lanes per channel forced (`DIMEX_SCAN_FORCE_SPLIT`), {base['tag']}, {layout} layout, µs:", "",
                  "| B | D | L | auto | " + " | ".join(f"S={s}" for s in SPLITS) + " |",
                  "|" + "---|" * (4 + len(SPLITS))]
        for row in base["rows"]:
            sp = row.get("split_us", {})
            lines.append(f"| {row['batch']} | {row['dim']} | {row['seqlen']} | {auto(row):.1f} | "
                         + " | ".join(f"{sp.get(str(s), sp.get(s, float('nan'))):.1f}" for s in SPLITS) + " |")
    chunk_rows = [row for row in base["rows"] if "chunk_us" in row]
    if chunk_rows:
        lines += ["", f"Sequence chunks forced (`DIMEX_SCAN_FORCE_CHUNKS`; 1 = no split; a forced K that gives "
                  f"the same whole-tile chunks as a smaller one is not timed), B = 1, "
                  f"{base['tag']}, {layout} layout, µs; S = lanes per channel (auto: chosen by the heuristic):", "",
                  "| B | D | L | auto | S | " + " | ".join(f"K={k}" for k in CHUNKS) + " |",
                  "|" + "---|" * (5 + len(CHUNKS))]
        for row in chunk_rows:
            for s, sweep in row["chunk_us"].items():
                cells = [f"{sweep[str(k)]:.1f}" if str(k) in sweep else f"{sweep[k]:.1f}" if k in sweep else "–"
                         for k in CHUNKS]
                lines.append(f"| {row['batch']} | {row['dim']} | {row['seqlen']} | {auto(row):.1f} | {s} | "
                             + " | ".join(cells) + " |")
    refs = [row for row in base["rows"] if "torch_reference_us" in row]
    if refs:
        lines += ["", "Pure-torch reference (`selective_scan_reference`, eager) on a few shapes:", "",
                  "| B | D | L | reference µs | kernel µs | ratio | kernel vs reference rel. error |",
                  "|---|---|---|---|---|---|---|"]
        for row in refs:
            lines.append(f"| {row['batch']} | {row['dim']} | {row['seqlen']} | {row['torch_reference_us']:.0f} | "
                         f"{row['us']:.1f} | {row['torch_reference_us'] / row['us']:.0f}x | "
                         f"{row.get('rel_err_vs_reference', float('nan')):.1e} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                    help="cpu: the CPU kernel against the reference and its floor (bench/scan_cpu.py), 1 and all threads")
    ap.add_argument("--backward", action="store_true",
                    help="training speed: forward+backward against mamba-ssm and the floor, training steps/s "
                         "(bench/scan_bwd.py; --json/--md as here)")
    ap.add_argument("--variant", action="append", default=[], help="name=path of a libdimexport_scan.so")
    ap.add_argument("--json", type=Path, help="write all numbers here")
    ap.add_argument("--md", type=Path, help="write the markdown table here")
    ap.add_argument("--no-sweep", dest="sweep", action="store_false", help="skip the forced-split sweep")
    ap.add_argument("--limit", type=int, default=0, help="only the first LIMIT shapes")
    ap.add_argument("--shapes", default="", help="BxDxL,... instead of the 18 standard shapes (e.g. dim-h's "
                                                 "8x3072x366,1x3072x366)")
    ap.add_argument("--token-major", action="store_true",
                    help="also time every variant on the layouts DiM's mixer hands the op: u, delta, z and the "
                         "output stored token-major (B, L, D), B and C stored (B, L, G, N); the sweeps then use them")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tag", default="default", help=argparse.SUPPRESS)
    ap.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if args.backward:
        import scan_bwd

        scan_bwd.main([a for a in sys.argv[1:] if a != "--backward"])
        return
    if args.device == "cpu":
        import scan_cpu

        env = scan_cpu.environment()
        most = os.cpu_count() or 1
        runs = [scan_cpu.run(t, forward=t == most) for t in sorted({1, most})]
        md = scan_cpu.markdown(env, runs)
        print(md)
        for path, text in ((args.json, json.dumps(dict(environment=env, runs=runs), indent=1)), (args.md, md)):
            if path:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        return
    variants = [v.split("=", 1) for v in args.variant] or [["default", str(ROOT / "dimexport/lib/libdimexport_scan.so")]]
    results = []
    for i, (tag, path) in enumerate(variants):
        cmd = [sys.executable, __file__, "--worker", "--tag", tag, "--limit", str(args.limit), "--shapes", args.shapes]
        if i == 0:
            cmd.append("--reference")
        if args.token_major:
            cmd.append("--token-major")
        if not (args.sweep and i == 0):
            cmd.append("--no-sweep")
        env = dict(os.environ, DIMEXPORT_SCAN_LIB=str(Path(path).resolve()))
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    env = environment()
    md = markdown(env, results)
    print(md)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(environment=env, results=results), indent=1))
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(md)


if __name__ == "__main__":
    main()
