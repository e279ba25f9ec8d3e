#!/usr/bin/env bash
# The main job, end to end on this machine: make the example models, build the keyword-spotting
# pipeline into a signed artifact, and roll it out to the four-device local fleet of
# examples/fleet.yaml (canary, then 50%, then 100%), then show the fleet.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "make example models and data (deterministic, no downloads)"
python3 examples/make_all.py

step "demo signing key (examples/keys, git-ignored); the fleet trusts its public half"
export EDGESHIP_SIGNING_KEY="$PWD/examples/keys/signing.key"
[ -f "$EDGESHIP_SIGNING_KEY" ] || edgeship keys generate --out "$EDGESHIP_SIGNING_KEY"

step "validate every manifest"
edgeship validate examples/*.yaml examples/*/pipeline*.yaml

step "build examples/kws/pipeline.yaml"
edgeship build examples/kws/pipeline.yaml -o out

step "plan the rollout (exit 1 = changes pending)"
edgeship plan examples/rollout.yaml || [ $? -eq 1 ]

step "apply it: canary, then waves, each gated on health"
edgeship apply examples/rollout.yaml

step "fleet status (the ssh and mqtt devices of the example fleet are declared, not running here)"
edgeship fleet status examples/fleet.yaml
