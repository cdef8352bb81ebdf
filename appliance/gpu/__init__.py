"""GPU inventory (NVML) and allocation."""
