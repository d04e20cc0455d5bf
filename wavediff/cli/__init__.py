"""The ``wavediff`` command line: one module per subcommand, each thin over the library."""
