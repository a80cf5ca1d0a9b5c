"""Speed: the fast GPU path (a captured training step), the CPU thread setting, and TensorBoard's checksums in C."""
