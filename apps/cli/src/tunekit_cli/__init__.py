"""tunekit_cli: the `ds` and `train` command-line apps (parse arguments, call a package, print)."""
