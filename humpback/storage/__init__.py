"""Files, content hashes, resumable shards, scratch folders and figures: what every step writes with."""
