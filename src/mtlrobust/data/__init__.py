"""Taskonomy data: ``taskonomy`` (reader of the real on-disk format), ``synthetic`` (embedded generator
writing that format), ``download`` (archives), ``packed`` (prepared memory-mapped arrays, PackedDataset).

Only ``packed`` imports torch; ``synthetic``, ``taskonomy`` and ``download`` start without it.
"""
