"""ONNX export (custom node and portable), its invariants, the artifact cache, and `verify` parity."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from dimexport.cli import main
from dimexport.errors import InputError
from dimexport.export import scan_node
from dimexport.export.exporter import ExportSpec, export, read_artifact
from dimexport.verify.compare import verify

REL_L2 = {"fp32": 1e-4, "fp16": 1e-2}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """Every tiny model x dtype x scan mode, exported once for the module."""
    root = tmp_path_factory.mktemp("artifacts")
    made = {}
    for model in ("dim-tiny", "dis-tiny"):
        for dtype in ("fp32", "fp16"):
            for scan in ("plugin", "portable"):
                spec = ExportSpec(model, 128, dtype, scan, batch=(1, 2, 4))
                made[model, dtype, scan] = export(spec, root)[0]
    return root, made


@pytest.mark.parametrize("model", ["dim-tiny", "dis-tiny"])
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
@pytest.mark.parametrize("scan", ["plugin", "portable"])
def test_ort_matches_torch(artifacts, model, dtype, scan):
    report = verify(artifacts[1][model, dtype, scan].folder, ["torch", "ort"])
    (row,) = report["comparisons"]
    assert report["passed"] and row["rel_l2"] <= REL_L2[dtype] and row["nonfinite"] == 0
    assert report["inputs"]["x"] == [2, 4, 16, 16]


@pytest.mark.parametrize("model, nodes", [("dim-tiny", 5), ("dis-tiny", 6)])
def test_plugin_graph_invariants(artifacts, model, nodes):
    art = artifacts[1][model, "fp16", "plugin"]
    proto = onnx.load(str(art.onnx_path), load_external_data=False)
    scans = [n for n in proto.graph.node if n.op_type == scan_node.OP_TYPE]
    assert len(scans) == nodes == art.manifest["scan_node"]["count"]
    assert all(n.domain == "trt.plugins" for n in scans) and not proto.functions
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in scans[0].attribute}
    assert attrs == {"plugin_version": b"1", "plugin_namespace": b"dimexport", "delta_softplus": 1, "reverse": 0, "has_z": 1}
    if model == "dis-tiny":  # bimamba: the backward direction of every block scans in reverse
        assert sorted(onnx.helper.get_attribute_value(a) for n in scans for a in n.attribute if a.name == "reverse") == [0, 0, 0, 1, 1, 1]
    assert ("trt.plugins", 1) in [(o.domain, o.version) for o in proto.opset_import]
    dtypes = {i.name: i.type.tensor_type.elem_type for i in proto.graph.input}
    assert dtypes == {"x": onnx.TensorProto.FLOAT16, "t": onnx.TensorProto.FLOAT, "y": onnx.TensorProto.INT64}
    assert proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # A, D and delta_bias reach the node in fp32 even in an fp16 graph.
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(art.onnx_path), load_external_data=False))
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    types |= {i.name: i.data_type for i in g.initializer}
    for name, value in zip(scan_node.INPUTS, scans[0].input):
        want = onnx.TensorProto.FLOAT if name in scan_node.FP32_INPUTS else onnx.TensorProto.FLOAT16
        assert types[value] == want, name


def test_portable_graph_has_no_custom_ops(artifacts):
    art = artifacts[1]["dim-tiny", "fp32", "portable"]
    proto = onnx.load(str(art.onnx_path), load_external_data=False)
    assert {n.domain for n in proto.graph.node} <= {""} and art.manifest["scan_node"]["count"] == 0
    assert "trt.plugins" not in {o.domain for o in proto.opset_import}


def test_schema_checks_arity_and_infers_output():
    scan_node.register_schema()
    shapes = {"u": ["batch", 8, 10], "delta": ["batch", 8, 10], "z": ["batch", 8, 10], "A": [8, 16],
              "B": ["batch", 1, 16, 10], "C": ["batch", 1, 16, 10], "D": [8], "delta_bias": [8]}
    ins = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT if n in scan_node.FP32_INPUTS else onnx.TensorProto.FLOAT16, shapes[n])
           for n in scan_node.INPUTS]
    node = onnx.helper.make_node(scan_node.OP_TYPE, list(scan_node.INPUTS), ["out"], domain="trt.plugins",
                                 plugin_version="1", plugin_namespace="dimexport", delta_softplus=1, reverse=0, has_z=1)
    graph = onnx.helper.make_graph([node], "g", ins, [onnx.helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT16, ["batch", 8, 10])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 20), onnx.helper.make_opsetid("trt.plugins", 1)])
    del graph.output[0].type.tensor_type.shape.dim[:]
    graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.UNDEFINED
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    out = inferred.graph.output[0].type.tensor_type
    assert out.elem_type == onnx.TensorProto.FLOAT16 and [d.dim_param or d.dim_value for d in out.shape.dim] == ["batch", 8, 10]
    onnx.checker.check_model(inferred, full_check=True)
    del inferred.graph.node[0].input[-1]
    with pytest.raises(onnx.checker.ValidationError, match="input size 7 not in range"):
        onnx.checker.check_model(inferred, full_check=True)


def test_reuse_and_force(artifacts):
    root, made = artifacts
    spec = ExportSpec("dim-tiny", 128, "fp32", "plugin", batch=(1, 2, 4))
    again, reused = export(spec, root)
    assert reused and again.folder == made["dim-tiny", "fp32", "plugin"].folder
    other, reused = export(ExportSpec("dim-tiny", 128, "fp32", "plugin", batch=(1, 2, 4), seed=1), root)
    assert not reused and other.folder != again.folder  # other weights, other key


def test_verify_cli_table_json_and_polygraphy_io(artifacts, tmp_path):
    folder = str(artifacts[1]["dis-tiny", "fp32", "plugin"].folder)
    res = CliRunner().invoke(main, ["verify", folder, "--json", "--save-io", str(tmp_path / "io")])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["polygraphy"].startswith("polygraphy run ") and "--load-inputs" in report["polygraphy"]
    from polygraphy.comparator import RunResults
    from polygraphy.json import load_json

    (feeds,) = load_json(str(tmp_path / "io" / "inputs.json"))
    assert feeds["y"][-1] == 10 and feeds["t"].min() == 1 and feeds["t"].max() == 999  # null label, t spread
    ort_out = RunResults.load(str(tmp_path / "io" / "outputs_ort.json"))[0][1][0]["out"]
    torch_out = RunResults.load(str(tmp_path / "io" / "outputs_torch.json"))[0][1][0]["out"]
    assert np.linalg.norm(ort_out - torch_out) / np.linalg.norm(torch_out) == pytest.approx(report["comparisons"][0]["rel_l2"])
    res = CliRunner().invoke(main, ["verify", folder])
    assert res.exit_code == 0 and "ort/torch" in res.stdout


def test_verify_failure_exits_3(artifacts):
    folder = str(artifacts[1]["dim-tiny", "fp32", "portable"].folder)
    res = CliRunner().invoke(main, ["verify", folder, "--atol", "0", "--rtol", "out:0"])
    assert res.exit_code == 3 and "NO" in res.stdout


def test_export_cli_errors(tmp_path):
    run = lambda *a: CliRunner().invoke(main, ["export", *a, "-o", str(tmp_path)])  # noqa: E731
    res = run("--model", "dim-q")
    assert res.exit_code == 2 and "unknown model id 'dim-q'" in res.output
    res = run("--model", "dim-tiny", "--resolution", "120")
    assert res.exit_code == 2 and "dim-tiny: resolution 120 is not a multiple of 16" in res.output
    res = run("--model", "dim-tiny", "--batch", "4:2:8")
    assert res.exit_code == 2 and "--batch must be min:opt:max with 1 <= min <= opt <= max, got 4:2:8" in res.output
    res = run("--model", "dim-tiny", "--checkpoint", str(tmp_path / "nnet_ema.pth"))
    assert res.exit_code == 2 and "nnet_ema.pth' does not exist or is not a file" in res.output
    bad = tmp_path / "dis.pt"
    import torch

    from dimexport.models import build_model

    torch.save({"ema": build_model("dis-tiny").state_dict()}, bad)
    res = run("--model", "dim-tiny", "--checkpoint", str(bad))
    assert res.exit_code == 2 and "does not fit dim-tiny; it fits dis-tiny: use --model dis-tiny" in res.output


def test_broken_or_foreign_artifacts(artifacts, tmp_path):
    src = artifacts[1]["dim-tiny", "fp32", "plugin"].folder
    broken = tmp_path / "broken"
    shutil.copytree(src, broken)
    (broken / "model.onnx.data").write_bytes(b"x")
    res = CliRunner().invoke(main, ["verify", str(broken)])
    assert res.exit_code == 2 and "is incomplete: model.onnx.data is missing or truncated; re-export with --force" in res.output
    foreign = tmp_path / "foreign"
    shutil.copytree(src, foreign)
    manifest = json.loads((foreign / "manifest.json").read_text())
    manifest["format"] = 99
    (foreign / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="in artifact format 99; this dimexport .* reads format 1: re-export with --force"):
        read_artifact(foreign)
    with pytest.raises(InputError, match="no manifest.json"):
        read_artifact(tmp_path)


def test_bf16_on_ort_is_refused_clearly(tmp_path):
    with pytest.raises(InputError, match="--dtype bf16 needs --opset 22 or newer"):
        ExportSpec("dis-tiny", 128, "bf16", opset=20)
    art, _ = export(ExportSpec("dis-tiny", 128, "bf16", "plugin", batch=(1, 2, 2)), tmp_path)
    assert art.manifest["spec"]["opset"] == 22
    res = CliRunner().invoke(main, ["verify", str(art.folder), "--backends", "torch,ort"])
    assert res.exit_code == 2 and "ONNX Runtime's CPU kernels and its Python ops have no bfloat16" in res.output


def test_failed_check_keeps_files_and_names_the_problem(tmp_path, monkeypatch):
    """A post-export check failure exits 5, keeps the files in <key>.failed and leaves no cache entry."""
    monkeypatch.setattr(ExportSpec, "expected_scan_nodes", lambda self: 99)
    res = CliRunner().invoke(main, ["export", "--model", "dim-tiny", "-o", str(tmp_path)])
    assert res.exit_code == 5 and "expected 99 DimSelectiveScan nodes for dim-tiny, found 5" in res.output
    (failed,) = (tmp_path / "dim-tiny").iterdir()
    assert failed.name.endswith(".failed") and (failed / "model.onnx").is_file()
