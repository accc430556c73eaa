"""Where pwru attaches: the probe table and one module per backend."""
