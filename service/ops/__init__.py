"""What operators see: command log, metrics, node registry, tracing, health, the AsyncAPI document."""
