#!/usr/bin/env bash
# `make demo-cluster`: a cluster in the background, the operator installed with helm,
# examples/nginx applied and hardened, `kubectl get hw` and the result printed, the cluster
# torn down. Needs `make build` and the cluster binary first (the Makefile builds them).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
dir=$here/target/cluster
cluster_bin=$1
mkdir -p "$dir"
start=$(date +%s)

echo "demo-cluster: starting the cluster (its log: $dir/cluster.log; the first run builds the example images with debootstrap)"
"$cluster_bin" "$dir" >"$dir/cluster.log" 2>&1 &
pid=$!
teardown() {
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  echo "demo-cluster: cluster torn down (its log: $dir/cluster.log)"
}
trap teardown EXIT
while [ ! -f "$dir/env" ]; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "demo-cluster: the cluster did not start:" >&2
    cat "$dir/cluster.log" >&2
    exit 1
  fi
  sleep 1
done
set -a; . "$dir/env"; set +a
echo "demo-cluster: cluster up in $(($(date +%s) - start))s (registry $REGISTRY)"

bash "$here/testbed/scripts/cluster-install.sh"

for f in "$here"/examples/nginx/*.yaml; do
  echo ---; sed "s/localhost:5000/$REGISTRY/" "$f"
done | "$KUBECTL" apply -f - >/dev/null
echo "demo-cluster: applied examples/nginx; waiting for the workflow..."
phase=
for _ in $(seq 600); do
  phase=$("$KUBECTL" get hw nginx -o jsonpath='{.status.phase}')
  case $phase in Succeeded|Failed) break ;; esac
  sleep 1
done
"$KUBECTL" get hw
if [ "$phase" != Succeeded ]; then
  echo "demo-cluster: the workflow ended in phase '${phase:-none}':" >&2
  "$KUBECTL" get hw nginx -o jsonpath='{.status.conditions}' >&2; echo >&2
  "$KUBECTL" -n whittle-system logs deployment/whittle --tail 40 >&2 || true
  exit 1
fi
"$KUBECTL" get hw nginx -o jsonpath='hardened image: {.status.hardenedImage}
size: {.status.result.sourceBytes} -> {.status.result.hardenedBytes} bytes ({.status.result.reductionPercent}% smaller), {.status.result.filesKept} files kept, {.status.result.filesRemoved} removed, {.status.result.removedShells} shells removed
verification: {.status.verification.result}
'
echo "demo-cluster: done in $(($(date +%s) - start))s"
