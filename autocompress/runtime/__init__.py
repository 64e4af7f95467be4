"""Measuring on the machine this runs on: runtimes, the timing harness, the profiler, validation.

``autocompress.hardware`` prices candidates from tables; this package builds and
times real models and layers to make and check those tables.
"""
