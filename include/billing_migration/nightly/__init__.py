"""Nightly jobs: snapshots of both stores, reconciliation, the renewal crawl."""
