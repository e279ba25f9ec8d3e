"""`edgeship ui`: a local, read-only web dashboard of the fleet, its rollouts and the builds, with
Prometheus metrics at /metrics.

It lives in the core (not in fleet/) because it reads both halves: the rollout journal and the
fleet inventory, and the build records and artifact store. Modules, each with one job:
`source` (the one place that reads edgeship state), `views` (the plain views it reads into), `snapshots` (a cached,
versioned snapshot refreshed in the background, so pages and live updates share one read),
`auth` (the access token), `metrics` (the Prometheus collector), `app` (routes and templates),
`server` (binding, token, uvicorn).
"""
