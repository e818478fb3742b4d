#!/usr/bin/env bash
# Stops and removes a cluster made by postgres.sh: postgres-stop.sh DIR (default $WEFT_TEST_POSTGRES_DIR).
set -euo pipefail
exec "$(dirname "$0")/postgres.sh" stop "${1:-${WEFT_TEST_POSTGRES_DIR:?usage: postgres-stop.sh DIR}}"
