#!/usr/bin/env python3
"""One TensorRT-RTX ahead-of-time build experiment (issue 5 §3).

    python bench/trt_rtx_aot.py --onnx model.onnx [--plugin-lib libdimexport_trt_plugin.so]
                                --batch 1:2:4 --out result.json [--module tensorrt_rtx] [--dry-run]

Steps, each recorded in the JSON result (rewritten after every step, so a process that aborts midway
still leaves what it got to): import the TensorRT module -> builder + network (strongly typed where the
module has the flag) -> optionally `load_library` the plugin library and list the registered creators ->
ONNX parse from the file (external data lives beside it) -> optimisation profile for x / t / y ->
`build_serialized_network` (seconds, engine bytes) -> `deserialize_cuda_engine` (result, exception and
every logged message). `--dry-run` checks the arguments and the ONNX file only and never imports TensorRT.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

SEVERITY = {0: "INTERNAL_ERROR", 1: "ERROR", 2: "WARNING", 3: "INFO", 4: "VERBOSE"}


def parse_batch(text: str) -> tuple[int, int, int]:
    parts = text.split(":")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"--batch must be min:opt:max (three positive integers), got {text!r}")
    lo, opt, hi = (int(p) for p in parts)
    if not 1 <= lo <= opt <= hi:
        raise argparse.ArgumentTypeError(f"--batch needs 1 <= min <= opt <= max, got {text!r}")
    return lo, opt, hi


def build_argparser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--onnx", required=True, type=Path, help="model.onnx (parsed from the file: external data beside it)")
    p.add_argument("--plugin-lib", type=Path, default=None, help="plugin library to load with registry.load_library")
    p.add_argument("--batch", type=parse_batch, default=(1, 1, 1), help="min:opt:max of the batch dimension")
    p.add_argument("--out", required=True, type=Path, help="JSON result file")
    p.add_argument("--module", default="tensorrt_rtx", help="Python module of the builder (tensorrt_rtx or tensorrt)")
    p.add_argument("--engine", type=Path, default=None, help="also write the serialised engine here")
    p.add_argument("--verbose", action="store_true", help="capture VERBOSE log messages too (default: INFO and up)")
    p.add_argument("--dry-run", action="store_true", help="check the arguments and the ONNX file only; no TensorRT")
    return p


class Recorder:
    """The JSON result; written to disk after every step."""

    def __init__(self, path: Path, args: argparse.Namespace) -> None:
        self.path = path
        self.data: dict = {
            "onnx": str(args.onnx),
            "plugin_lib": str(args.plugin_lib) if args.plugin_lib else None,
            "batch": {"min": args.batch[0], "opt": args.batch[1], "max": args.batch[2]},
            "module": args.module,
            "python": platform.python_version(),
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "stage": "start",
            "steps": {},
            "log": [],
        }
        self.flush()

    def step(self, name: str, **values) -> dict:
        self.data["stage"] = name
        entry = self.data["steps"].setdefault(name, {})
        entry.update(values)
        self.flush()
        return entry

    def flush(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        tmp.replace(self.path)


def exc_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def onnx_inputs(path: Path) -> dict:
    """Graph inputs {name: (elem_type, [dims])} read without the external data (onnx is optional)."""
    try:
        import onnx
    except ImportError:
        return {}
    model = onnx.load(str(path), load_external_data=False)
    out = {}
    for i in model.graph.input:
        tt = i.type.tensor_type
        out[i.name] = {"elem_type": onnx.TensorProto.DataType.Name(tt.elem_type),
                       "dims": [d.dim_param or d.dim_value for d in tt.shape.dim]}
    out["_nodes"] = {"count": len(model.graph.node),
                     "custom": sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")})}
    return out


def creator_info(c) -> dict:
    info = {"type": type(c).__name__}
    for key, attr in (("name", "name"), ("version", "plugin_version"), ("namespace", "plugin_namespace"),
                      ("interface", "interface_info")):
        try:
            val = getattr(c, attr)
            if attr == "interface_info":
                val = f"{getattr(val, 'kind', '?')} {getattr(val, 'major', '?')}.{getattr(val, 'minor', '?')}"
            info[key] = val
        except Exception as exc:  # noqa: BLE001 - record whatever the binding says
            info[key] = f"<{exc_text(exc)}>"
    return info


def list_creators(registry) -> list[dict] | str:
    try:
        return [creator_info(c) for c in registry.all_creators]
    except Exception as exc:  # noqa: BLE001
        return f"<all_creators failed: {exc_text(exc)}>"


def run(args: argparse.Namespace, rec: Recorder) -> int:
    onnx_path = args.onnx.resolve()
    rec.step("check", onnx_exists=onnx_path.is_file(),
             onnx_bytes=onnx_path.stat().st_size if onnx_path.is_file() else None,
             data_bytes=(onnx_path.parent / (onnx_path.name + ".data")).stat().st_size
             if (onnx_path.parent / (onnx_path.name + ".data")).is_file() else None,
             plugin_lib_exists=args.plugin_lib.is_file() if args.plugin_lib else None)
    if not onnx_path.is_file():
        rec.step("check", error=f"ONNX file {onnx_path} does not exist")
        return 2
    if args.plugin_lib and not args.plugin_lib.is_file():
        rec.step("check", error=f"plugin library {args.plugin_lib} does not exist")
        return 2
    try:
        inputs = onnx_inputs(onnx_path)
    except Exception as exc:  # noqa: BLE001
        inputs = {"_error": exc_text(exc)}
    rec.step("check", graph_inputs=inputs)
    if args.dry_run:
        rec.step("done", dry_run=True, ok=True)
        return 0

    # -- import ------------------------------------------------------------------------------------
    try:
        trt = __import__(args.module)
    except Exception as exc:  # noqa: BLE001
        rec.step("import", ok=False, error=exc_text(exc))
        return 3
    rec.data["trt_version"] = getattr(trt, "__version__", "?")
    rec.step("import", ok=True, version=rec.data["trt_version"], file=getattr(trt, "__file__", None))

    min_sev = 4 if args.verbose else 3

    class CaptureLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, msg) -> None:  # noqa: A003 - TensorRT's name
            sev = int(severity)
            if sev <= min_sev:
                entry = {"t": round(time.perf_counter() - t0, 3), "sev": SEVERITY.get(sev, str(sev)),
                         "stage": rec.data["stage"], "msg": str(msg)}
                rec.data["log"].append(entry)
                # Every captured message goes to stderr at once, so a process that aborts (std::terminate
                # inside TensorRT) still leaves its last messages in the caller's log.
                print(f"[trt {entry['sev']}] {msg}", file=sys.stderr, flush=True)
                if sev <= 2:
                    rec.flush()

    t0 = time.perf_counter()
    logger = CaptureLogger()

    # -- builder / network -----------------------------------------------------------------------
    builder = trt.Builder(logger)
    flags_tried = []
    network = None
    flag_enum = getattr(trt, "NetworkDefinitionCreationFlag", None)
    members = sorted(getattr(flag_enum, "__members__", {}).keys()) if flag_enum else []
    candidates = []
    if flag_enum is not None and hasattr(flag_enum, "STRONGLY_TYPED"):
        candidates.append(("STRONGLY_TYPED", 1 << int(flag_enum.STRONGLY_TYPED)))
    candidates.append(("0", 0))
    for label, flags in candidates:
        try:
            network = builder.create_network(flags)
            flags_tried.append({"flags": label, "ok": network is not None})
            if network is not None:
                break
        except Exception as exc:  # noqa: BLE001
            flags_tried.append({"flags": label, "ok": False, "error": exc_text(exc)})
    strongly = None
    try:
        strongly = bool(network.get_flag(flag_enum.STRONGLY_TYPED)) if network is not None and "STRONGLY_TYPED" in members else None
    except Exception:  # noqa: BLE001
        pass
    rec.step("network", ok=network is not None, flag_members=members, tried=flags_tried, strongly_typed=strongly,
             has_add_plugin_v3=hasattr(network, "add_plugin_v3") if network is not None else None)
    if network is None:
        return 4

    # -- plugin library ----------------------------------------------------------------------------
    registry = builder.get_plugin_registry() if hasattr(builder, "get_plugin_registry") else trt.get_plugin_registry()
    before = list_creators(registry)
    rec.step("plugins", creators_before=before)
    if args.plugin_lib:
        lib = str(args.plugin_lib.resolve())
        rec.step("plugins", load_library=lib, load_started=True)
        try:
            handle = registry.load_library(lib)
            rec.step("plugins", load_ok=handle is not None, handle=repr(handle))
        except Exception as exc:  # noqa: BLE001
            rec.step("plugins", load_ok=False, load_error=exc_text(exc))
        after = list_creators(registry)
        rec.step("plugins", creators_after=after)
        lookup = {}
        for getter in ("get_creator", "get_plugin_creator"):
            if hasattr(registry, getter):
                try:
                    c = getattr(registry, getter)("DimSelectiveScan", "1", "dimexport")
                    lookup[getter] = creator_info(c) if c is not None else None
                except Exception as exc:  # noqa: BLE001
                    lookup[getter] = f"<{exc_text(exc)}>"
        rec.step("plugins", lookup_DimSelectiveScan_1_dimexport=lookup)

    # -- parse ---------------------------------------------------------------------------------------
    parser = trt.OnnxParser(network, logger)
    rec.step("parse", started=True)
    t = time.perf_counter()
    try:
        ok = bool(parser.parse_from_file(str(onnx_path)))
        err = None
    except Exception as exc:  # noqa: BLE001
        ok, err = False, exc_text(exc)
    errors = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        item = {}
        for key in ("code", "desc", "node", "node_name", "node_operator", "file", "line", "func", "local_function_stack"):
            try:
                val = getattr(e, key)()
                item[key] = str(val) if key == "code" else val
            except Exception:  # noqa: BLE001 - not every binding has every accessor
                pass
        errors.append(item)
    rec.step("parse", ok=ok, seconds=round(time.perf_counter() - t, 2), exception=err, errors=errors,
             num_layers=network.num_layers, num_inputs=network.num_inputs, num_outputs=network.num_outputs,
             inputs=[{"name": network.get_input(i).name, "shape": list(network.get_input(i).shape),
                      "dtype": str(network.get_input(i).dtype)} for i in range(network.num_inputs)],
             outputs=[{"name": network.get_output(i).name, "shape": list(network.get_output(i).shape),
                       "dtype": str(network.get_output(i).dtype)} for i in range(network.num_outputs)])
    if not ok:
        return 5
    plugin_layers = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if "PLUGIN" in str(layer.type):
            plugin_layers.append({"name": layer.name, "type": str(layer.type)})
    rec.step("parse", plugin_layers=len(plugin_layers), plugin_layer_examples=plugin_layers[:3])

    # -- profile + build ---------------------------------------------------------------------------
    lo, opt, hi = args.batch
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    shapes = {}
    for i in range(network.num_inputs):
        inp = network.get_input(i)
        dims = list(inp.shape)
        mk = lambda b: tuple(b if j == 0 else d for j, d in enumerate(dims))  # noqa: E731
        shapes[inp.name] = [mk(lo), mk(opt), mk(hi)]
        profile.set_shape(inp.name, *shapes[inp.name])
    config.add_optimization_profile(profile)
    rec.step("build", profile={k: [list(s) for s in v] for k, v in shapes.items()}, started=True)
    t = time.perf_counter()
    try:
        plan = builder.build_serialized_network(network, config)
        err = None
    except Exception as exc:  # noqa: BLE001
        plan, err = None, exc_text(exc)
    secs = round(time.perf_counter() - t, 2)
    nbytes = plan.nbytes if plan is not None else None
    rec.step("build", ok=plan is not None, seconds=secs, engine_bytes=nbytes, exception=err)
    if plan is None:
        return 6
    if args.engine:
        args.engine.parent.mkdir(parents=True, exist_ok=True)
        args.engine.write_bytes(bytes(plan))
        rec.step("build", engine_file=str(args.engine))

    # -- deserialize ---------------------------------------------------------------------------------
    n_log = len(rec.data["log"])
    runtime = trt.Runtime(logger)
    rec.step("deserialize", started=True)
    try:
        engine = runtime.deserialize_cuda_engine(plan)
        err = None
    except Exception as exc:  # noqa: BLE001
        engine, err = None, exc_text(exc)
    msgs = [e["msg"] for e in rec.data["log"][n_log:] if e["sev"] in ("INTERNAL_ERROR", "ERROR", "WARNING")]
    info = {"ok": engine is not None, "returned": "engine" if engine is not None else "None", "exception": err,
            "messages": msgs}
    if engine is not None:
        try:
            info["num_io_tensors"] = engine.num_io_tensors
        except Exception:  # noqa: BLE001
            pass
    rec.step("deserialize", **info)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_argparser().parse_args(argv)
    rec = Recorder(args.out, args)
    try:
        code = run(args, rec)
    except BaseException as exc:  # noqa: BLE001 - anything is a result here
        rec.data["traceback"] = traceback.format_exc()
        rec.step("crashed", error=exc_text(exc))
        code = 1
    rec.data["exit_code"] = code
    rec.data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    rec.flush()
    print(json.dumps({k: rec.data.get(k) for k in ("onnx", "trt_version", "stage", "exit_code")}), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
