"""`python -m vitgrade` is the vitgrade command line."""

from .cli import main

main()
