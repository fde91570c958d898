"""What-if workflows: sweeps of scenario fields (sweep) and the layout search (search): the candidate
space (space), its costs over a candidate axis (candidates), the closed-form longest paths of the
schedules (structures, analytic), and the work split over forked processes (workers)."""
