"""edgeship.targets: chip profiles (YAML, one per chip), loader, cost model."""
