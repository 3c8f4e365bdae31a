"""Cross-service tests: the whole suite as separate processes."""
