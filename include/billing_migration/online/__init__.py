"""Online migration: copy a country while it stays writable, capture its changes from the binlog."""
