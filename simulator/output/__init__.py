"""What simrack writes: report tables, JSON and CSV (render), what-if tables (whatif_tables), Chrome
traces (trace), pictures (plots, pareto), the regression baseline (baseline) and the error against
published figures (validation). Human units appear here and in simulator.scenario.units only."""
