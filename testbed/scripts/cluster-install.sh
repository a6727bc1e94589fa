#!/usr/bin/env bash
# `make cluster-install`: the operator's image into the running `make cluster`'s registry, then
# the chart with helm, as the README's Helm steps do, waiting until the operator is ready.
# Needs `make build` first (the Makefile runs it).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
env_file=$here/target/cluster/env
if [ ! -f "$env_file" ]; then
  echo "cluster-install: no cluster is running ($env_file is missing): start one with 'make cluster' in another shell" >&2
  exit 1
fi
set -a; . "$env_file"; set +a
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/Cargo.toml" | head -1)
repo=$REGISTRY/whittle/operator

# The digest, not the tag, goes to helm: a rebuilt image under the same tag is then rolled out.
pushed=$("$here/target/dist/whittle" operator-image "oci:$here/target/image/whittle:$version" \
  "$repo:$version" --insecure | tail -1)
digest=$(sed -n 's/.*@\(sha256:[0-9a-f]*\).*/\1/p' <<<"$pushed")
echo "cluster-install: pushed $repo:$version@$digest"

# hostNetwork: the registry listens on the node's loopback, where the operator must push.
"$HELM" upgrade --install whittle "$here/charts/whittle" \
  --namespace whittle-system --create-namespace \
  --set image.repository="$repo" --set image.digest="$digest" \
  --set hostNetwork=true \
  --wait --timeout 5m
"$KUBECTL" -n whittle-system rollout status deployment/whittle --timeout 2m
echo "cluster-install: the operator is ready"
