"""UI tabs: each module builds its part of the gr.Blocks and calls smokeflow; nothing else."""
