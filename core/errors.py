"""The error every layer raises for a bad setting (the CLI turns it into one line and exit code 2). Its own module:
``core.storage`` raises it and ``core.configs`` reads config files through storage, so neither imports the other
for it."""


class ConfigError(ValueError):
    """A config or command-line value is invalid; the message names the field and what is allowed."""
