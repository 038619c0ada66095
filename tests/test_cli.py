"""The command line: listings, doctor, forward, and documented exit codes with exact messages."""

from __future__ import annotations

import json

from click.testing import CliRunner

from dimexport.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_models_json_lists_ids_with_counts():
    res = run("models", "--json")
    assert res.exit_code == 0
    rows = {r["id"]: r for r in json.loads(res.output)}
    assert {"dim-s", "dim-l", "dim-h", "dim-h-512", "dis-h-2", "dis-s-4", "dim-tiny", "dis-tiny"} <= rows.keys()
    assert round(rows["dim-h"]["params"] / 1e6, 1) == 862.4 and rows["dim-h"]["seq_len"] == 366
    assert rows["dim-h-512"]["seq_len"] == 1230 and rows["dis-h-2"]["seq_len"] == 258
    assert rows["dim-l"]["checkpoint_format"].startswith("DiM nnet_ema.pth")


def test_models_table():
    res = run("models")
    assert res.exit_code == 0 and "dim-h" in res.output and "862.41M" in res.output


def test_doctor_json_and_required_components():
    res = run("doctor", "--json")
    assert res.exit_code == 0
    report = json.loads(res.output)
    assert report["components"]["torch"]["found"] and report["missing_required"] == []
    assert {"scan_library", "trt_plugin_library", "tensorrt", "tensorrt_rtx", "gpu"} <= report["components"].keys()
    res = run("doctor", "--json", "--require", "tensorrt")
    if not json.loads(res.stdout)["components"]["tensorrt"]["found"]:
        assert res.exit_code == 4 and json.loads(res.stdout)["missing_required"] == ["tensorrt"]
        assert "required but missing: tensorrt" in res.stderr
    assert run("doctor", "--require", "warp-drive").exit_code == 2


def test_forward_runs_and_reports():
    res = run("forward", "--model", "dis-tiny", "--batch", "2", "--repeat", "1", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["output_shape"] == [2, 8, 16, 16] and out["finite"] and out["seq_len"] == 66


def test_forward_errors_have_exit_codes():
    res = run("forward", "--model", "dim-xl")
    assert res.exit_code == 2 and "unknown model id 'dim-xl'; known ids: dim-s, dim-l" in res.output
    res = run("forward", "--model", "dim-tiny", "--resolution", "100")
    assert res.exit_code == 2 and "resolution 100 is not a multiple of 16" in res.output
    res = run("forward", "--model", "dim-tiny", "--cuda-graph")
    assert res.exit_code == 2 and "--cuda-graph needs --device cuda" in res.output
    res = run("forward", "--model", "dim-tiny", "--device", "cuda:0")
    if res.exit_code != 0:
        assert res.exit_code == 4 and "--device cuda needs a CUDA GPU visible to torch" in res.output
