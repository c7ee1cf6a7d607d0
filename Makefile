# The README's two commands: `make demo` (set up, migrate a demo country, print the report) and `make test`.
.PHONY: demo test test-ui stack-up stack-down stack-status lint lock bench celery-wave cassandra-cluster

demo:
	scripts/demo

test:
	scripts/test

# The status plugin end to end: a real migration, a real api-server, headless Chromium (slow; CI runs it too).
test-ui:
	BM_UI_TESTS=1 scripts/test tests/integration/test_status_ui.py -q

stack-up:
	scripts/stack up

stack-down:
	scripts/stack down

stack-status:
	scripts/stack status

lint:
	.venv/bin/ruff check .

# Regenerate the resolved, pinned set from requirements.txt (needs PyPI).
lock:
	uv pip compile requirements.txt -p 3.11 -o constraints.txt

bench:
	scripts/bench

# A wave of two countries through a scheduler and two Celery workers (starts the stack with Redis; `make test`
# runs it too, as tests/integration/test_celery_wave.py: ~5 min on a quiet 2-core host).
celery-wave:
	scripts/celery-wave

# Two Cassandra nodes, replication factor 2: the migration tests against the cluster (not in `make test`).
cassandra-cluster:
	scripts/cassandra-cluster
