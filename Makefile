# The daily commands. `make help` lists them.
.PHONY: help demo test lint fmt bench bench-score

help:
	@grep -E '^[a-z-]+:.*## ' Makefile | sed 's/:.*## /\t/'

demo: ## Score the shipped example events with the default model
	cargo run --release -- score --input deploy/examples/events.jsonl --until 2026-06-01T00:00:00Z

test: ## The whole test suite
	cargo test

lint: ## Formatting and clippy, as CI runs them
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

fmt: ## Format the code
	cargo fmt

bench: ## Criterion benchmarks (fold, decode)
	cargo bench

bench-score: ## End-to-end: `leadscore score` on 1M generated events vs a bare serde_json read
	bash benches/score.sh
