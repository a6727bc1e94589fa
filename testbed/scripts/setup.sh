#!/usr/bin/env bash
# Installs everything the tests and the demo need; idempotent and quiet when all is present.
# Debian packages come from apt-get (runc, the CNI plugins, iptables for kube-proxy, chromium for
# tests/report_page.rs); Kubernetes
# (control plane, kubelet, kube-proxy, kubectl), containerd, helm, cosign and syft are built from
# their Go modules through the Go module proxy and cached outside the repository.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../tools.env
source "$here/tools.env"
cache=${XDG_CACHE_HOME:-$HOME/.cache}/whittle/tools

packages=(runc docker-registry debootstrap umoci skopeo curl apache2-utils iproute2 wrk util-linux ca-certificates chromium
          containernetworking-plugins iptables conntrack busybox-static lua5.1)
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
kube_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
kube_missing=0
for c in "${kube_cmds[@]}" etcd; do [ -x "$kube_dir/$c" ] || kube_missing=1; done
if ((kube_missing)); then
  echo "setup: building Kubernetes $KUBE_VERSION (${kube_cmds[*]}, etcd) — 15 to 20 minutes on a fresh 2-core machine"
  minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  ver=k8s.io/component-base/version
  tmp=$kube_dir.tmp
  rm -rf "$tmp" && mkdir -p "$tmp"
  (cd "$here/gotools/kube" && go build -trimpath \
    -ldflags "-s -w -X $ver.gitVersion=$KUBE_VERSION -X $ver.gitMajor=1 -X $ver.gitMinor=$minor -X $ver.gitTreeState=clean" \
    -o "$tmp/" "${kube_cmds[@]/#/k8s.io/kubernetes/cmd/}" ./cmd/etcd)
  rm -rf "$kube_dir" && mv "$tmp" "$kube_dir"
fi

# containerd v2: kubelet 1.37 flags 1.x (Debian's) as losing support. The btrfs, devmapper and zfs
# snapshotters need C libraries and are not used (the node runs on overlayfs).
containerd_dir=$cache/containerd-$CONTAINERD_VERSION
if [ ! -x "$containerd_dir/containerd" ] || [ ! -x "$containerd_dir/containerd-shim-runc-v2" ]; then
  echo "setup: building containerd $CONTAINERD_VERSION"
  GOBIN=$containerd_dir.tmp go install -trimpath -tags "no_btrfs no_devmapper no_zfs" \
    -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
    "github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
    "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION"
  rm -rf "$containerd_dir" && mv "$containerd_dir.tmp" "$containerd_dir"
fi

helm_dir=$cache/helm-$HELM_VERSION
if [ ! -x "$helm_dir/helm" ]; then
  echo "setup: building helm $HELM_VERSION"
  GOBIN=$helm_dir.tmp go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  rm -rf "$helm_dir" && mv "$helm_dir.tmp" "$helm_dir"
fi

# cosign verifies the signatures and attestations whittle pushes (tests/signing.rs); v2, whose
# `.sig`/`.att` registry layout whittle writes. 6 to 7 minutes on a fresh 2-core machine.
cosign_dir=$cache/cosign-$COSIGN_VERSION
if [ ! -x "$cosign_dir/cosign" ]; then
  echo "setup: building cosign $COSIGN_VERSION"
  GOBIN=$cosign_dir.tmp go install -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/release-utils/version.gitVersion=$COSIGN_VERSION" \
    "github.com/sigstore/cosign/v2/cmd/cosign@$COSIGN_VERSION"
  rm -rf "$cosign_dir" && mv "$cosign_dir.tmp" "$cosign_dir"
fi

# kstatus: how Flux and kpt read a workflow's status (tests/kstatus.rs). Seconds to build.
kstatus_dir=$cache/kstatus-$CLI_UTILS_VERSION
if [ ! -x "$kstatus_dir/kstatus" ]; then
  echo "setup: building kstatus (cli-utils $CLI_UTILS_VERSION)"
  grep -q "sigs.k8s.io/cli-utils $CLI_UTILS_VERSION" "$here/gotools/kstatus/go.mod"
  rm -rf "$kstatus_dir.tmp" && mkdir -p "$kstatus_dir.tmp"
  (cd "$here/gotools/kstatus" && go build -trimpath -ldflags "-s -w" -o "$kstatus_dir.tmp/kstatus" .)
  rm -rf "$kstatus_dir" && mv "$kstatus_dir.tmp" "$kstatus_dir"
fi

# syft reads the package inventory of hardened images, as scanners see it. 5 to 7 minutes.
syft_dir=$cache/syft-$SYFT_VERSION
if [ ! -x "$syft_dir/syft" ]; then
  echo "setup: building syft $SYFT_VERSION"
  GOBIN=$syft_dir.tmp go install -trimpath \
    -ldflags "-s -w -X main.version=${SYFT_VERSION#v}" \
    "github.com/anchore/syft/cmd/syft@$SYFT_VERSION"
  rm -rf "$syft_dir" && mv "$syft_dir.tmp" "$syft_dir"
fi
