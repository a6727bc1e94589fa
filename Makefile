# The two commands a person needs:
#   make demo   the main job on its embedded default
#   make test   the whole test suite (sets up everything first)
# Both start from a fresh machine: `make setup` installs what is missing and is quiet otherwise.

CARGO ?= cargo
# The sensor ships inside images that may have no libc: a static-pie build, in a target dir of
# its own so the static flags never invalidate the host build.
SENSOR_TARGET_DIR := $(CURDIR)/target/sensor
SENSOR_BIN := $(SENSOR_TARGET_DIR)/x86_64-unknown-linux-gnu/release/whittle-sensor
export WHITTLE_SENSOR_BIN := $(SENSOR_BIN)

.PHONY: setup test demo lint sensor build install bench-sensor bench-image

setup:
	@bash testbed/scripts/setup.sh

sensor:
	RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=$(SENSOR_TARGET_DIR) \
		$(CARGO) build --quiet --release -p whittle-sensor --target x86_64-unknown-linux-gnu

# One directory with a release `whittle` and the static `whittle-sensor` beside it, where
# whittle looks for the sensor: what a CI pipeline copies. `make install PREFIX=...` puts both
# in PREFIX/bin.
DIST_DIR := $(CURDIR)/target/dist
PREFIX ?= /usr/local
build: sensor
	$(CARGO) build --quiet --release --bin whittle
	mkdir -p $(DIST_DIR)
	install -m 0755 target/release/whittle $(SENSOR_BIN) $(DIST_DIR)/
	@echo "built $(DIST_DIR)/whittle and $(DIST_DIR)/whittle-sensor"

install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(DIST_DIR)/whittle $(DIST_DIR)/whittle-sensor $(DESTDIR)$(PREFIX)/bin/

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

# Benchmarks are not tests: they print results and write them to target/bench/.
bench-sensor: setup sensor
	$(CARGO) run --quiet --release -p whittle-testbed --bin sensor-bench

# whittle harden of the nginx fixture and of a 1.1 GiB synthetic image (built once, cached):
# wall time against the floor (reading and gunzipping every layer), peak RSS, and the bytes
# whittle instrument uploads -> target/bench/image.json. See docs/benchmarks.md.
bench-image: setup sensor
	$(CARGO) bench --quiet --bench image
