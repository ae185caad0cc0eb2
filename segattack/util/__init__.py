"""Small shared utilities every layer may import: strict parsing of user text, the data folders."""
