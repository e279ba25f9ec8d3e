"""Rollouts: plan and apply an artifact across a fleet in waves, gated on health, journaled in SQLite.

Modules, each with one job: `spec` (the Rollout manifest as a typed spec), `artifacts` (find or pack
the bundle a rollout ships), `waves` (who goes when), `gate` (is a wave healthy), `journal` (the
crash-safe record of every step), `plan` (current -> desired per device), `engine` (apply),
`reconcile` (the GitOps loop).
"""
