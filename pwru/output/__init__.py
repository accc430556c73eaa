"""From ring-buffer records to what a person reads: decoding, names and renderers."""
