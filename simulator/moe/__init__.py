"""Mixture of experts, for training and serving alike: how tokens choose experts (routing), which EP
rank holds each expert (placement), the all-to-all dispatch and combine (dispatch), and the per-layer
costs of the slowest EP rank (costs)."""
