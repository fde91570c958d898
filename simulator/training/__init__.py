"""Training workflow: schedule + costs -> Plan (plan, halves), the step simulated task by task
(engine: the task graph as arrays in taskgraph, longest paths in paths, shared links in sharing, the
Timeline in timeline; the simpy engine it replaced in reference_engine), faults applied to it
(faults), and the Report (report)."""
