"""Command-line tools, one module per sub-command (BART style: cfl in, cfl out)."""
