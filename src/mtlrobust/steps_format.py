"""The per-step sidecar (``{attack}.steps.csv``): its columns and last line, in a module of its own so that
its readers (``analysis``, and the study planner through it) need not import torch, as ``steptrace``,
its writer, does."""

COLUMNS = ["model_id", "epoch", "attack", "method", "attacked", "sample", "task", "step", "attacked_loss",
           "error"]  # fmt: skip
TRAILER = "# end of steps: "  # + "{rows} rows": the last line of a complete steps CSV
