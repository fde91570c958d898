"""What-if workflows: sweeps of scenario fields (sweep) and the layout search (search): the candidate
space (space), its costs over a candidate axis (candidates), the closed-form longest paths of the
schedules (structures, analytic), the work split over forked processes (workers), and the engine's
figures for the best layouts (refine)."""
