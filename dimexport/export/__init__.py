"""ONNX export of the model zoo: the custom-node graph and its portable standard-ops twin."""
