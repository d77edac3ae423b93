"""`python -m agentstream` is the command line."""

from agentstream.cli import main

main()
