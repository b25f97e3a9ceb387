# The daily commands. `make help` lists them.
.PHONY: help demo test test-fast lint fmt bench bench-score bench-service

help:
	@grep -E '^[a-z-]+:.*## ' Makefile | sed 's/:.*## /\t/'

demo: ## Score the shipped example events with the default model
	cargo run --release -- score --input deploy/examples/events.jsonl --until 2026-06-01T00:00:00Z

test: ## The whole test suite (starts its own Kafka broker; installs its tools when missing)
	cargo test

# The targets that need no broker, no JVM and no browser: the library's unit
# tests, the engine and its stages, the properties, the golden files, the
# CLI, the HTTP server, the demo (librdkafka's in-process mock cluster) and
# the backtest without its browser test. Add a new test file here unless it
# starts a broker.
FAST_TESTS = --lib --test golden --test stages --test conditions --test properties --test cli --test formats --test http --test calllist \
	--test demo --test backtest --test generate --test sla --test scores --test forget --test half_lives

test-fast: ## The inner loop: every test that needs no broker, JVM or browser (under a minute after a build)
	cargo test $(FAST_TESTS) -- --skip the_html_report_draws_its_charts_in_a_browser

lint: ## Formatting and clippy, as CI runs them
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

fmt: ## Format the code
	cargo fmt

bench: ## Criterion benchmarks (fold, decode)
	cargo bench

bench-score: ## End-to-end: `leadscore score` on 1M generated events vs a bare serde_json read
	bash benches/score.sh

bench-service: ## The service on a real Kafka broker: throughput, restore, latency, replay (~12 min)
	bash benches/service.sh
