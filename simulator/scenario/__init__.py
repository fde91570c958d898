"""What the user writes: the scenario schema (model, workload, topology, layout, options, faults),
human units at the edge, device data sheets, and the loader of YAML files, presets and `--set`
overrides. `load_scenario(path, overrides) -> Scenario`; every problem is one ScenarioError line."""
