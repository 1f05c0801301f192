"""Scale-out: many runs of one workflow on a backend (local or Ray workers), jobs and their scheduling."""
