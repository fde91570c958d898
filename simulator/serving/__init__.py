"""Serving workflow: step costs from the cost model (steps, experts, memory), requests (requests), the
request-level simulation (engine) and the ServeReport (report)."""
