"""One module per `ibd` subcommand, each with `configure(parser)` and `run(args) -> int`."""
