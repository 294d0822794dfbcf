"""Self-curation: the method table, scoring every pair, selection, the labelled dev set, curator quality."""
