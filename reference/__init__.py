"""The instructor's reference solution. Trusted side only: never shipped, never in a worker's view."""
