"""The ParallelComp pipeline: configuration, prompts, chunking, scoring, eviction, selection, merge, calibration,
and the end-to-end `generate` (see docs/PIPELINE.md)."""
