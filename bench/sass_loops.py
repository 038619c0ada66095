"""Instruction counts of the kernels' loops in their sm_90 SASS, without a GPU (issue "Whole-denoiser speed" §2).

The fused ops and the scan are bound by issued instructions as often as by memory (KERNEL_NOTES.md), so what a change
does to a loop's instruction count, and of which kind, is worth knowing before spending device time on it. This
compiles a kernel source with nvcc (or reads a cubin), disassembles it with cuobjdump, finds each loop of the kernels
whose name matches (a backward branch and its target) and counts the loop body's instructions by opcode:

    python3 bench/sass_loops.py plugins_trt/src/conv_silu.cu --kernel 'channels_kernel.*dtype1ELi3ELb0E'
    python3 bench/sass_loops.py plugins_trt/src/norm_modulate.cu --kernel norm_kernel --json out.json

Needs nvcc and cuobjdump + nvdisasm (`pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm` where the CUDA
toolkit has none). Loops nest: an outer loop's count includes its inner loops'.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,6})\*/\s+([^;/]+?)\s*;")
_BACKWARD = re.compile(r"\bBRA\b[^;]*?0x([0-9a-f]+)")


@dataclass
class Loop:
    kernel: str
    start: int  # byte offset of the loop's first instruction
    end: int  # byte offset of its backward branch
    instructions: int
    opcodes: dict[str, int]


def opcode(instruction: str) -> str:
    """`@!P0 FFMA.FTZ R1, ...` -> `FFMA` (predicate and modifiers dropped)."""
    text = re.sub(r"^@!?U?P\w+\s+", "", instruction.strip())
    return text.split()[0].split(".")[0]


def parse_loops(sass: str, kernel: str = "") -> list[Loop]:
    """Every loop of every function in cuobjdump -sass text whose mangled name matches the regex `kernel`."""
    loops = []
    for chunk in re.split(r"\n\s*Function : ", sass)[1:]:
        name = chunk.split("\n", 1)[0].strip()
        if not re.search(kernel, name):
            continue
        body = [(int(offset, 16), text) for offset, text in _INSTRUCTION.findall(chunk)]
        for offset, text in body:
            m = _BACKWARD.search(text)
            if m and int(m.group(1), 16) < offset:  # (a branch to itself pads the end of every function)
                start = int(m.group(1), 16)
                ops = collections.Counter(opcode(t) for o, t in body if start <= o <= offset)
                loops.append(Loop(name, start, offset, sum(ops.values()), dict(ops.most_common())))
    return loops


def tool(name: str) -> str:
    """A CUDA binary utility from PATH, the toolkit beside nvcc, or the nvidia-* pip wheels."""
    found = shutil.which(name)
    if found:
        return found
    nvcc = shutil.which("nvcc")
    candidates = [Path(nvcc).parent / name] if nvcc else []
    for site in sys.path:
        candidates += Path(site).glob(f"nvidia/cu*/bin/{name}")
    for c in candidates:
        if c.is_file():
            return str(c)
    sys.exit(f"{name} not found: install the CUDA toolkit's, or pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm")


def disassemble(path: Path, arch: str) -> str:
    """cuobjdump -sass of a cubin, or of the cubin nvcc makes from a .cu source for `arch`."""
    with tempfile.TemporaryDirectory() as tmp:
        cubin = path
        if path.suffix == ".cu":
            cubin = Path(tmp) / "kernel.cubin"
            subprocess.run([tool("nvcc"), "-O3", "-std=c++17", f"-arch={arch}", "-cubin", "-o", str(cubin),
                            f"-I{ROOT / 'plugins_trt' / 'include'}", str(path)], check=True)
        cuobjdump = tool("cuobjdump")
        env = dict(os.environ, PATH=f"{Path(tool('nvdisasm')).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        return subprocess.run([cuobjdump, "-sass", str(cubin)], check=True, capture_output=True, text=True,
                              env=env).stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help="a .cu kernel source (compiled here) or a .cubin")
    ap.add_argument("--kernel", default="", help="regex on the mangled kernel names (default: all)")
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--top", type=int, default=12, help="opcodes shown per loop")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    loops = parse_loops(disassemble(args.source, args.arch), args.kernel)
    if not loops:
        sys.exit(f"no loop in a kernel matching {args.kernel!r}")
    for loop in loops:
        ops = ", ".join(f"{k} {v}" for k, v in list(loop.opcodes.items())[: args.top])
        print(f"{loop.kernel}\n  loop {loop.start:#x}-{loop.end:#x}: {loop.instructions} instructions ({ops})")
    if args.json:
        args.json.write_text(json.dumps([asdict(loop) for loop in loops], indent=1) + "\n")


if __name__ == "__main__":
    main()
