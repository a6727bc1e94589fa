# The two commands a person needs:
#   make demo   the main job on its embedded default
#   make test   the whole test suite (sets up everything first)
# Both start from a fresh machine: `make setup` installs what is missing and is quiet otherwise.

CARGO ?= cargo

.PHONY: setup test demo lint unit integration

setup:
	@bash testbed/scripts/setup.sh

# Lint, then every test in the workspace: unit tests next to the code and the integration tests
# in tests/ (they need root, runc, the registry and the control plane that setup provides).
test: setup lint
	$(CARGO) test --workspace --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

demo: setup
	$(CARGO) run --quiet --release -p whittle-testbed --bin testbed-demo
