"""Runner-health config for a test box with no GPU and no network: GPU checks off, disk checked
with small floors, no endpoint outside loopback (the registries of the test's own config)."""

NO_GPU_HEALTH = {
    "checks": {"gpus": "off", "leaked_vram": "warn", "ecc": "warn", "disk": "fail", "reachability": "off"},
    "disk": [{"path": "$DOCKER_ROOT", "min_free_gib": 1}, {"path": "$WORKSPACE", "min_free_gib": 1}],
    "endpoints": [],
}
