"""TensorRT: module discovery and the plugin registry (`api`), and engine builds (`build`)."""
