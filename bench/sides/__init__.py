"""The subjects a trial measures: one module per link kind, master side and worker side."""
