"""Move subscription billing from legacy MySQL to Cassandra, one country at a time."""
