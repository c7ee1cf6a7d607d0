"""Development tools: the dirty-data generator and the demo. Not used by the DAGs."""
