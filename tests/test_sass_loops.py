"""bench/sass_loops.py, the SASS loop counter used to weigh kernel changes without a GPU: its parser on a listing in
cuobjdump's format (the tool itself needs nvcc and cuobjdump, which CI lacks)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SPEC = importlib.util.spec_from_file_location("sass_loops", Path(__file__).parent.parent / "bench" / "sass_loops.py")
sass_loops = sys.modules["sass_loops"] = importlib.util.module_from_spec(SPEC)  # (dataclasses look it up)
SPEC.loader.exec_module(sass_loops)

LISTING = """
	code for sm_90
		Function : _Z4scanv
	.headerflags	@"EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)"
        /*0000*/                   LDC R1, c[0x0][0x28] ;                 /* 0x00000a00ff017b82 */
        /*0010*/              @P0 EXIT ;                                  /* 0x000000000000094d */
        /*0020*/                   FFMA.FTZ R2, R3, R4, R2 ;              /* 0x0000000403027223 */
        /*0030*/                   MUFU.EX2 R6, R2 ;                      /* 0x0000000200067308 */
        /*0040*/                   IADD3 R5, R5, 0x1, RZ ;                /* 0x0000000105057810 */
        /*0050*/                   ISETP.GE.AND P0, PT, R5, 0x10, PT ;    /* 0x000000100500780c */
        /*0060*/              @!P0 BRA 0x20 ;                             /* 0xffffffffffec8947 */
        /*0070*/                   EXIT ;                                 /* 0x000000000000794d */
        /*0080*/                   BRA 0x80;                              /* 0xfffffffc00fc7947 */
		..........
		Function : _Z4convv
	.headerflags	@"EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)"
        /*0000*/                   FADD R1, R1, 1 ;                       /* 0x3f80000001017421 */
        /*0010*/              @P1 BRA 0x0 ;                               /* 0xfffffffc00fc7947 */
        /*0020*/                   EXIT ;                                 /* 0x000000000000794d */
"""


def test_loops_are_found_by_their_backward_branches_and_counted_by_opcode():
    loops = sass_loops.parse_loops(LISTING)
    assert [(loop.kernel, loop.start, loop.end, loop.instructions) for loop in loops] == [
        ("_Z4scanv", 0x20, 0x60, 5), ("_Z4convv", 0x0, 0x10, 2)]  # not the padding branch to itself
    assert loops[0].opcodes == {"FFMA": 1, "MUFU": 1, "IADD3": 1, "ISETP": 1, "BRA": 1}


def test_kernel_regex_selects_functions():
    assert [loop.kernel for loop in sass_loops.parse_loops(LISTING, "conv")] == ["_Z4convv"]
    assert sass_loops.opcode("@!UP0 LDG.E.128.CONSTANT R4, desc[UR4][R2.64]") == "LDG"
