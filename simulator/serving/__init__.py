"""Serving workflow: step costs from the cost model (steps, experts, memory), requests (requests), the
request-level simulation (engine, its schedulers' state in batch, its step log in steplog) and the
ServeReport (report)."""
