#!/usr/bin/env bash
# System packages the integration tests start for real: mosquitto (MQTT broker), sshd and PostgreSQL
# (the shared state store; the tests run initdb/pg_ctl from /usr/lib/postgresql/<version>/bin);
# chromium, systemd-analyze, zsh and fish.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # headless, for the dashboard's browser test (tests/ui)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)  # verifies the agent's unit (tests/bootstrap)
command -v zsh >/dev/null 2>&1 || need+=(zsh)    # completion scripts are syntax-checked in each shell
command -v fish >/dev/null 2>&1 || need+=(fish)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends "${need[@]}"
fi
