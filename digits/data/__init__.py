"""Data: ingest and the IDX parser, the batch store, the snapshot, splits, image normalisation."""
