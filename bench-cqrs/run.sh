#!/usr/bin/env bash
# cqrs-es's bank-account commands on annal, postgres-es and MemStore (README: "cqrs-es:
# annal-es"). Installs Debian's PostgreSQL when it is missing; the benchmark starts its own
# server in a temporary directory on a loopback port and stops it.
set -euo pipefail
cd "$(dirname "$0")"
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "bench-cqrs/run.sh: PostgreSQL is missing; install Debian's postgresql package (as root)" >&2
    exit 1
  fi
fi
cargo run --release --locked -- "$@"
