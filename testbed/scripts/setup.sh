#!/usr/bin/env bash
# Installs everything the tests and the demo need; idempotent and quiet when all is present.
# Debian packages come from apt-get; the Kubernetes control plane and helm are built from their Go
# modules through the Go module proxy and cached outside the repository.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../tools.env
source "$here/tools.env"
cache=${XDG_CACHE_HOME:-$HOME/.cache}/whittle/tools

packages=(runc docker-registry debootstrap umoci skopeo curl apache2-utils iproute2 wrk util-linux ca-certificates)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

kube_dir=$cache/kubernetes-$KUBE_VERSION
if [ ! -x "$kube_dir/kube-apiserver" ] || [ ! -x "$kube_dir/kube-controller-manager" ] ||
   [ ! -x "$kube_dir/kube-scheduler" ] || [ ! -x "$kube_dir/etcd" ]; then
  echo "setup: building Kubernetes $KUBE_VERSION (kube-apiserver, kube-controller-manager, kube-scheduler, etcd) — several minutes on a fresh machine"
  minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  ver=k8s.io/component-base/version
  tmp=$kube_dir.tmp
  rm -rf "$tmp" && mkdir -p "$tmp"
  (cd "$here/gotools/kube" && go build -trimpath \
    -ldflags "-s -w -X $ver.gitVersion=$KUBE_VERSION -X $ver.gitMajor=1 -X $ver.gitMinor=$minor -X $ver.gitTreeState=clean" \
    -o "$tmp/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler ./cmd/etcd)
  rm -rf "$kube_dir" && mv "$tmp" "$kube_dir"
fi

helm_dir=$cache/helm-$HELM_VERSION
if [ ! -x "$helm_dir/helm" ]; then
  echo "setup: building helm $HELM_VERSION"
  GOBIN=$helm_dir.tmp go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  rm -rf "$helm_dir" && mv "$helm_dir.tmp" "$helm_dir"
fi
