#!/usr/bin/env bash
# Installs a one-node SLURM for shoal's cluster tests: Debian's slurm-wlm,
# munge (its authentication) and libpmix-dev (so `srun --mpi=pmix` works; it
# must be present before slurmd starts). Idempotent: installs only what is
# missing. Then run tests/cluster/start.sh.
set -euo pipefail

packages=(slurm-wlm munge libpmix-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "tests/cluster/install.sh: ${packages[*]} already installed"
    exit 0
fi

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
if ! command -v apt-get >/dev/null; then
    echo "tests/cluster/install.sh: needs apt-get (Debian or Ubuntu) to install ${missing[*]}" >&2
    exit 1
fi
echo "tests/cluster/install.sh: installing ${missing[*]}"
# The index may be stale or empty on a fresh machine; `update` first, quietly.
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
