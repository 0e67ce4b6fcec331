"""Batch grading for instructors: discovery of a class's submissions and parallel, resumable runs."""
