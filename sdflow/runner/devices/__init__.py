"""Devices and memory: choosing the device and dtype, the C allocator around loops, model preparation."""
