"""`python -m grader` is the vitgrade command line."""

from .cli import main

main()
