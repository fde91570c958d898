"""The one cost model, shared by training, serving and the search: operators of a layer (ops) and the
model's parameters (params), their roofline times (roofline) under the device calibration
(calibration, fitted from kernel measurements by device_fit), collectives (collectives) over the
fabric's tiers (fabric), ranks on devices (placement), memory and KV cache (memory, kv_cache), and a
training step's pipeline costs over a leading candidate axis (pipeline)."""
