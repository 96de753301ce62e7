"""`python -m jaxsim …` = the `jaxsim` command."""

from jaxsim.cli import main

main()
