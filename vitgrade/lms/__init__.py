"""LMS integration: the Gradescope autograder bundle and the student kit."""
