"""The paper-scale cost: FLOPs, memory, the GPU-hour estimate and its report."""
