"""edgeship.fleet: inventory, transports (local, ssh, mqtt), device agent, rollouts."""
