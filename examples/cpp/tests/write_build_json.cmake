# Lays out an engine folder the way `dimexport build` does, around a stand-in engine: DIR/model.engine and
# DIR/build.json, whose plugin member records PLUGIN and its SHA-256 (computed here by CMake, independently of
# dimexport_run's sha256.hpp).
#   cmake -DDIR=<folder> -DPLUGIN=<library> -DTRT_VERSION=<x.y.z> -DSM=<sm_XY> -P write_build_json.cmake
file(SHA256 "${PLUGIN}" sha)
set(engine "not a TensorRT plan\n")
string(LENGTH "${engine}" bytes)
file(WRITE "${DIR}/model.engine" "${engine}")
string(CONCAT json "{\"format\": 1, \"tensorrt\": {\"module\": \"tensorrt\", \"version\": \"${TRT_VERSION}\"}, "
       "\"gpu\": {\"sm\": \"${SM}\", \"name\": \"stand-in\"}, "
       "\"plugin\": {\"library\": \"${PLUGIN}\", \"sha256\": \"${sha}\"}, "
       "\"engine\": {\"file\": \"model.engine\", \"bytes\": ${bytes}}, \"io\": []}\n")
file(WRITE "${DIR}/build.json" "${json}")
