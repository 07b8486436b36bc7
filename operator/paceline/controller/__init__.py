"""The reconcile loop of one TrainingJob: observe (I/O) → decide (pure stages) → apply (I/O)."""
