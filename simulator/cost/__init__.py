"""Cost-model inputs built from measurements rather than tuned constants.

`device_fit` reads the published kernel-level measurements transcribed in simulator/data/kernels.yaml (GEMM
throughput by shape and dtype, attention kernels, streaming HBM bandwidth, NCCL and DeepEP collectives, launch cost
and clocks under load) and fits one parameter set per device generation (ampere, hopper, blackwell): GEMM efficiency
against shape per dtype, attention efficiency against sequence length for the forward and backward passes, achieved
HBM and NVLink/NIC fractions, collective latencies. The result is simulator/data/calibration.yaml, each parameter
with the entry ids it was fitted from and its residuals; docs/calibration.md explains the forms and the gaps.
"""
