"""`python -m simulator`: the simrack program."""

from .entry import main

main()
