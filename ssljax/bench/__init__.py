"""`ssljax bench`: what a run costs, measured where it runs.

- `loss_memory`: compiled memory of dense against blockwise losses (needs no accelerator);
- `throughput`: the trainer's own train step on synthetic batches: compile time, median step
  time, throughput, FLOPs (`flops`: XLA's count and the transformer formula), MFU, memory;
- `presets`: the published models at their published shapes, and a tiny size of each;
- `input_pipeline`: the host input pipeline alone, to set beside the step's rate;
- `command`: the CLI's table and JSON lines.
"""
