"""edgeship.stages: one module per build stage, registered by name."""
