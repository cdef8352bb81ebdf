"""Several hosts through Slurm ([cluster]): its configuration files and what Slurm
reports, as pure functions; applctl's `cluster` commands do the I/O."""
