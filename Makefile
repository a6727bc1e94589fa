# The two commands a person needs:
#   make demo   the main job on its embedded default
#   make test   the whole test suite (sets up everything first)
# Both start from a fresh machine: `make setup` installs what is missing and is quiet otherwise.

CARGO ?= cargo
# The sensor ships inside images that may have no libc, and so does whittle in the operator's
# image: static-pie builds, in a target dir of their own so the static flags never invalidate
# the host build.
STATIC_TARGET_DIR := $(CURDIR)/target/static
STATIC_CARGO := RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=$(STATIC_TARGET_DIR) \
	$(CARGO) build --quiet --release --target x86_64-unknown-linux-gnu
SENSOR_BIN := $(STATIC_TARGET_DIR)/x86_64-unknown-linux-gnu/release/whittle-sensor
STATIC_WHITTLE := $(STATIC_TARGET_DIR)/x86_64-unknown-linux-gnu/release/whittle
export WHITTLE_SENSOR_BIN := $(SENSOR_BIN)

.PHONY: setup test demo lint sensor build install image chart cluster-bin cluster cluster-install demo-cluster bench-sensor bench-image bench-intake bench-continuous bench-policy

setup:
	@bash testbed/scripts/setup.sh

sensor:
	$(STATIC_CARGO) -p whittle-sensor

# One directory with a static release `whittle` and `whittle-sensor` beside it, where whittle
# looks for the sensor: what a CI pipeline copies. `make install PREFIX=...` puts both in
# PREFIX/bin.
DIST_DIR := $(CURDIR)/target/dist
PREFIX ?= /usr/local
build: sensor
	$(STATIC_CARGO) --bin whittle
	mkdir -p $(DIST_DIR)
	install -m 0755 $(STATIC_WHITTLE) $(SENSOR_BIN) $(DIST_DIR)/
	@echo "built $(DIST_DIR)/whittle and $(DIST_DIR)/whittle-sensor"

install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(DIST_DIR)/whittle $(DIST_DIR)/whittle-sensor $(DESTDIR)$(PREFIX)/bin/

# The operator's image, assembled by whittle itself (no Docker): an OCI layout in
# target/image/whittle and, with IMAGE=registry/repo:tag, pushed there too (INSECURE=1 for a
# plain-HTTP registry such as `make cluster`'s; REGISTRY_CONFIG=FILE for credentials). A release
# publishes IMAGE=ghcr.io/whittle-dev/whittle:$(VERSION), the chart's default image.
# SIGN_KEY=cosign.key (COSIGN_PASSWORD in the environment) signs the pushed image and attaches
# its SLSA provenance and CycloneDX SBOM; docs/security.md says how to verify them.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
IMAGE_LAYOUT := $(CURDIR)/target/image/whittle
image: build
	$(DIST_DIR)/whittle operator-image oci:$(IMAGE_LAYOUT):$(VERSION) $(IMAGE) \
		$(if $(SIGN_KEY),--sign-key $(SIGN_KEY)) \
		$(if $(INSECURE),--insecure) $(if $(REGISTRY_CONFIG),--registry-config $(REGISTRY_CONFIG))

# The chart as a package in target/chart and, with CHART_REGISTRY=oci://host/path, pushed there
# with `helm push` (PLAIN_HTTP=1 for a plain-HTTP registry, REGISTRY_CONFIG=FILE for
# credentials); it is then installed from oci://host/path/whittle. HELM defaults to the helm on
# PATH, else the one `make setup` installs.
HELM_VERSION := $(shell sed -n 's/^HELM_VERSION=//p' testbed/tools.env)
HELM ?= $(or $(shell command -v helm 2>/dev/null),$(HOME)/.cache/whittle/tools/helm-$(HELM_VERSION)/helm)
CHART_DIR ?= $(CURDIR)/target/chart
CHART_VERSION := $(shell sed -n 's/^version: *//p' charts/whittle/Chart.yaml)
chart:
	mkdir -p $(CHART_DIR)
	$(HELM) package charts/whittle --destination $(CHART_DIR)
	$(if $(CHART_REGISTRY),$(HELM) push $(CHART_DIR)/whittle-$(CHART_VERSION).tgz $(CHART_REGISTRY) \
		$(if $(PLAIN_HTTP),--plain-http) $(if $(REGISTRY_CONFIG),--registry-config $(REGISTRY_CONFIG)))

# Lint, then every test in the workspace: unit tests next to the code and the integration tests
# in tests/ (they need root, runc, the registry and the control plane that setup provides).
test: setup lint sensor
	$(CARGO) test --workspace --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The README's quick start: `whittle local` on the nginx sample image, as an OCI layout in
# target/demo (no registry needed), exercised with curl.
DEMO_DIR := $(CURDIR)/target/demo
demo: setup sensor
	$(CARGO) build --quiet --release --bin whittle
	$(CARGO) run --quiet --release -p whittle-testbed --bin demo-image -- $(DEMO_DIR)/nginx
	target/release/whittle local oci:$(DEMO_DIR)/nginx:latest \
		--exercise 'curl -fsS http://$$WHITTLE_TARGET/ | grep -q "Welcome to nginx"' \
		--exercise 'test "$$(curl -s -o /dev/null -w "%{http_code}" http://$$WHITTLE_TARGET/missing)" = 404' \
		--summary $(DEMO_DIR)/summary.json

# A cluster to try the operator on, like `kind create cluster` without Docker: the test bed's
# control plane, real node and registry in the foreground until Ctrl-C; target/cluster/env
# says how to reach them. `make cluster-install` (in another shell) puts the operator on it
# with helm; `make demo-cluster` does everything with examples/nginx and tears it down.
CLUSTER_DIR := $(CURDIR)/target/cluster
CLUSTER_BIN := $(CURDIR)/target/debug/cluster
cluster-bin: setup
	$(CARGO) build --quiet -p whittle-testbed --bin cluster

cluster: cluster-bin
	$(CLUSTER_BIN) $(CLUSTER_DIR)

cluster-install:
	@test -f $(CLUSTER_DIR)/env || { echo "cluster-install: no cluster is running: start one with 'make cluster' in another shell" >&2; exit 1; }
	$(MAKE) --no-print-directory build
	bash testbed/scripts/cluster-install.sh

demo-cluster: build cluster-bin
	bash testbed/scripts/demo-cluster.sh $(CLUSTER_BIN)

# Benchmarks are not tests: they print results and write them to target/bench/.
bench-sensor: setup sensor
	$(CARGO) run --quiet --release -p whittle-testbed --bin sensor-bench

# whittle harden of the nginx fixture and of a 1.1 GiB synthetic image (built once, cached):
# wall time against the floor (reading and gunzipping every layer), peak RSS, and the bytes
# whittle instrument uploads -> target/bench/image.json. See docs/benchmarks.md.
bench-image: setup sensor
	$(CARGO) bench --quiet --bench image

# Continuous hardening on the real node: a new digest to a verified, promoted hardened image,
# and the registry requests of idle checks -> target/bench/continuous.json.
bench-continuous: setup sensor
	$(CARGO) bench --quiet --bench continuous

# A HardeningPolicy over 5, 10 and 20 Deployments, 5 at a time: time, the operator's memory and
# CPU, API requests per workflow -> target/bench/policy.json.
bench-policy: setup sensor
	$(CARGO) bench --quiet --bench policy

# The operator's peak memory while 8 maximal reports arrive at once -> target/bench/intake.json.
bench-intake: setup sensor
	$(CARGO) bench --quiet --bench intake
