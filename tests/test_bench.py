"""`dimexport bench`: every backend and baseline is measured or reported with the reason it cannot run here; the
numbers are consistent (percentiles, images/s, speed-up against eager); bad arguments exit 2 with the fix."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from dimexport.cli import main
from dimexport.verify.speed import _percentile, run_bench, time_calls


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_percentiles_and_timer():
    values = [float(v) for v in range(1, 101)]
    assert (_percentile(values, 0.5), _percentile(values, 0.9), _percentile(values, 0.99)) == (50.0, 90.0, 99.0)
    calls = []
    times = time_calls(lambda: calls.append(1), torch.device("cpu"), warmup=2, repeat=5)
    assert len(calls) == 7 and len(times) == 5 and min(times) >= 0


def test_bench_cli_measures_or_explains_every_row(tmp_path):
    res = run("bench", "--model", "dim-tiny", "--batch", "1,2", "--backends", "eager,graph,ort,trt", "--baselines",
              "official,dit", "--steps", "2", "--warmup", "1", "--repeat", "3", "-o", str(tmp_path / "b"), "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report == json.loads((tmp_path / "b" / "bench.json").read_text())
    assert (tmp_path / "b" / "bench.png").stat().st_size > 1000
    rows = {(r["name"], r["batch"], r["what"]): r for r in report["rows"]}
    for batch in (1, 2):
        eager = rows["eager", batch, "forward"]
        assert len(eager["ms"]) == 3 and eager["p50"] <= eager["p90"] <= eager["p99"]
        assert eager["images_per_s"] == pytest.approx(batch / (eager["p50"] / 1e3)) and eager["speedup_vs_eager"] == 1
        ort = rows["ort", batch, "forward"]
        assert ort["note"] == "plugin graph, cpu" and ort["speedup_vs_eager"] == pytest.approx(eager["p50"] / ort["p50"])
        assert rows["eager", batch, "sample"]["note"] == f"2 steps, 2 calls of {2 * batch}"
        assert rows["graph", batch, "forward"]["skipped"] == "CUDA graphs need --device cuda"
        assert rows["trt", batch, "forward"]["skipped"].startswith("TensorRT is needed here and not usable")
        assert rows["official", batch, "forward"]["skipped"].startswith("mamba-ssm is not importable")
        dit = rows["dit", batch, "forward"]
        assert dit["note"] == "DiT 64x5" and dit["params"] > 0 and dit["p50"] > 0
    assert report["environment"]["torch"] == torch.__version__


def test_compile_backend_keeps_the_scan_one_op():
    report = run_bench("dim-tiny", [1], ["eager", "compile"], [], None, "fp32", "cpu", warmup=1, repeat=2)
    compiled = [r for r in report["rows"] if r["name"] == "compile"][0]
    assert not compiled["skipped"] and compiled["note"].startswith("compiled in ") and compiled["p50"] > 0


def test_bad_arguments_exit_2():
    res = run("bench", "--model", "dim-tiny", "--backends", "eager,tvm")
    assert res.exit_code == 2 and "backend 'tvm' is not one of eager, graph, compile, ort, trt" in res.output
    res = run("bench", "--model", "dim-tiny", "--batch", "1,x")
    assert res.exit_code == 2 and "--batch '1,x' must be comma-separated integers such as 1,8" in res.output
    res = run("bench", "--model", "dim-tiny", "--device", "cpu", "--dtype", "fp16")
    assert res.exit_code == 2 and "--dtype fp16 on the CPU" in res.output


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_graph_backend_and_dit_graph_on_the_gpu():
    report = run_bench("dim-tiny", [2], ["eager", "graph"], ["dit"], None, "fp16", "cuda", warmup=2, repeat=5)
    rows = {r["name"]: r for r in report["rows"]}
    assert not rows["graph"]["skipped"] and rows["graph"]["peak_mib"] > 0 and not rows["dit graph"]["skipped"]
