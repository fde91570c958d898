"""Training workflow: schedule + costs -> Plan (plan, halves), the step simulated task by task
(engine), faults applied to it (faults), and the Report (report)."""
