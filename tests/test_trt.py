"""`dimexport build` and the runtime without TensorRT: exit 4, engine naming and keys, build.json checks,
compatibility messages, and how a dead build process is reported. (With TensorRT: test_trt_gpu.py.)"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dimexport.cli import main
from dimexport.errors import EnvironmentProblem, InputError
from dimexport.export.exporter import Artifact, ExportSpec
from dimexport.runtime import compatibility_problems, rebuild_command
from dimexport.trt import api
from dimexport.trt.build import (
    BuildError, BuildOptions, child_failure, engine_key, engine_name, find_engines, read_build, timing_cache_path,
)

HAVE_TRT = any(importlib.util.find_spec(m) for m in api.MODULES)
TRT10 = api.TrtInfo("tensorrt", "10.14.1.48")
SPEC = ExportSpec("dim-l", 256, "fp16", "plugin", (1, 8, 32))


def artifact(folder: Path, key: str = "e" * 64) -> Artifact:
    return Artifact(folder, {"key": key, "spec": dataclasses.asdict(SPEC)})


def build_info(**over) -> dict:
    info = {
        "format": 1, "created": "2026-11-22T10:00:00+0000", "spec": dataclasses.asdict(SPEC),
        "tensorrt": {"module": "tensorrt", "version": "10.14.1.48"}, "gpu": {"sm": "sm_90", "name": "NVIDIA H100"},
        "plugin": {"library": "/opt/lib/libdimexport_trt_plugin.so", "sha256": "a" * 64},
        "engine": {"file": "m.engine", "bytes": 4},
    }
    return info | over


def write_engine(folder: Path, info: dict, payload: bytes = b"plan") -> Path:
    folder.mkdir(parents=True)
    (folder / "build.json").write_text(json.dumps(info))
    (folder / info["engine"]["file"]).write_bytes(payload)
    return folder


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed here")
def test_build_without_tensorrt_exits_4_before_exporting(tmp_path):
    res = CliRunner().invoke(main, ["build", "--model", "dim-tiny", "--fp16", "-o", str(tmp_path)])
    assert res.exit_code == 4
    assert "TensorRT is needed here and not usable: tensorrt is not installed; tensorrt_rtx is not installed." in res.output
    assert "pip install tensorrt-cu13" in res.output
    assert not any(tmp_path.iterdir())  # nothing was exported


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed here")
def test_verify_trt_backend_without_tensorrt_exits_4(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["export", "--model", "dis-tiny", "-o", str(tmp_path), "--json"])
    folder = json.loads(res.stdout)["artifact"]
    res = runner.invoke(main, ["verify", folder, "--backends", "torch,trt"])
    assert res.exit_code == 4 and "TensorRT is needed here and not usable" in res.output


def test_unknown_module_and_bad_options():
    with pytest.raises(EnvironmentProblem, match="unknown TensorRT module 'tensorrt_llm'"):
        api.load("tensorrt_llm")
    with pytest.raises(InputError, match="--opt-level 7 must be 0..5"):
        BuildOptions(opt_level=7)
    assert CliRunner().invoke(main, ["build", "--model", "dim-tiny", "--opt-level", "9"]).exit_code == 2


def test_engine_name_and_key_cover_everything_that_changes_the_engine(tmp_path):
    art = artifact(tmp_path)
    key = engine_key(art, TRT10, "sm_90", "a" * 64, BuildOptions())
    assert engine_name(SPEC, TRT10, "sm_90", key) == f"dim-l-plugin-fp16-trt10.14.1-sm90-{key[:12]}"
    assert engine_name(SPEC, api.TrtInfo("tensorrt_rtx", "1.7.1.116"), "sm_89", key).startswith("dim-l-plugin-fp16-trtrtx1.7.1-sm89-")
    variants = [
        engine_key(artifact(tmp_path, "f" * 64), TRT10, "sm_90", "a" * 64, BuildOptions()),
        engine_key(art, api.TrtInfo("tensorrt", "11.1.0.1"), "sm_90", "a" * 64, BuildOptions()),
        engine_key(art, TRT10, "sm_89", "a" * 64, BuildOptions()),
        engine_key(art, TRT10, "sm_90", "b" * 64, BuildOptions()),
        engine_key(art, TRT10, "sm_90", "a" * 64, BuildOptions(opt_level=5)),
        engine_key(art, TRT10, "sm_90", "a" * 64, BuildOptions(workspace_gib=4)),
    ]
    assert len({key, *variants}) == 7
    # The timing cache is not part of the key: it changes build time, not what a correct engine computes.
    assert engine_key(art, TRT10, "sm_90", "a" * 64, BuildOptions(timing_cache=None)) == key
    assert timing_cache_path(tmp_path, TRT10, "sm_90", "auto") == tmp_path / "timing-caches" / "trt10.14.1-sm90.cache"
    assert timing_cache_path(tmp_path, TRT10, "sm_90", None) is None


def test_read_build_refuses_incomplete_or_foreign_folders(tmp_path):
    with pytest.raises(InputError, match="holds no build.json; build engines with `dimexport build`"):
        read_build(tmp_path)
    write_engine(tmp_path / "old", build_info(format=0))
    with pytest.raises(InputError, match="has engine format 0; this dimexport reads 1: rebuild with --force"):
        read_build(tmp_path / "old")
    write_engine(tmp_path / "cut", build_info(), payload=b"pl")
    with pytest.raises(InputError, match=r"m.engine is missing or truncated; rebuild with `dimexport build --force`"):
        read_build(tmp_path / "cut" / "m.engine")
    assert read_build(write_engine(tmp_path / "ok", build_info()) / "m.engine").engine_path == tmp_path / "ok" / "m.engine"


def test_find_engines_newest_first_skips_broken(tmp_path):
    write_engine(tmp_path / "engines" / "a", build_info(created="2026-11-21T10:00:00+0000"))
    write_engine(tmp_path / "engines" / "b", build_info(created="2026-11-22T10:00:00+0000"))
    write_engine(tmp_path / "engines" / "c", build_info(), payload=b"")
    assert [e.folder.name for e in find_engines(artifact(tmp_path))] == ["b", "a"]


def test_compatibility_problems_name_what_differs():
    info = build_info()
    assert compatibility_problems(info, TRT10, "sm_90", "a" * 64) == []
    problems = compatibility_problems(info, api.TrtInfo("tensorrt", "11.1.0.1"), "sm_89", "c" * 64)
    assert problems == [
        "it was built with tensorrt 10.14.1.48, this process has tensorrt 11.1.0.1",
        "it was built for sm_90 (NVIDIA H100), this GPU is sm_89",
        "it was built with the plugin library /opt/lib/libdimexport_trt_plugin.so (sha256 aaaaaaaaaaaa), "
        "the library loaded here has sha256 cccccccccccc",
    ]
    assert compatibility_problems(build_info(plugin=None), TRT10, "sm_90", None) == []
    assert compatibility_problems(info, TRT10, "sm_90", None) == []  # None: plugin unchecked (engine selection)
    assert rebuild_command(info) == "dimexport build --model dim-l --fp16 --scan plugin --resolution 256 --batch 1:8:32 --seed 0"
    info["spec"].update(random_init=True, seed=3)  # build takes --random-init as export does
    assert rebuild_command(info).endswith("--batch 1:8:32 --random-init --seed 3")
    res = CliRunner().invoke(main, ["build", "--model", "dim-tiny-digits", "--random-init", "--checkpoint", "x.pth"])
    assert res.exit_code == 2 and "give either --checkpoint or --random-init, not both" in res.output


def test_a_dead_build_process_is_reported_with_stage_and_log(tmp_path):
    log = tmp_path / "build.log"
    err = child_failure(-6, {"stage": "parse"}, log, ["[INFO] Successfully created plugin: DimSelectiveScan"],
                        ["terminate called without an active exception"])
    assert isinstance(err, BuildError) and err.exit_code == 5
    assert str(err) == (
        "the TensorRT build process was killed by SIGABRT during 'parse' (inside TensorRT: nothing in dimexport "
        "raised). Last messages: [INFO] Successfully created plugin: DimSelectiveScan | terminate called without "
        f"an active exception. Full log: {log}"
    )
    err = child_failure(4, {"stage": "load plugin library", "error": "loading x did not register"}, log, [], [])
    assert isinstance(err, EnvironmentProblem) and str(err) == f"loading x did not register (full log: {log})"
    err = child_failure(5, {"stage": "parse", "error": "TensorRT could not parse m.onnx: node scan_3 (DimSelectiveScan)"}, log, [], [])
    assert isinstance(err, BuildError) and "node scan_3 (DimSelectiveScan)" in str(err)
