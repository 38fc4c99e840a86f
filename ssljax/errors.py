"""The one exception class for mistakes of the user's.

A bad config, an unknown variant, a path or workdir that is not there, a flag value the command
cannot take, a dataset that is not prepared, a checkpoint that cannot be restored: each raises a
UserError (or a subclass named for its room, e.g. `checks.ConfigError`) where it is found, with
a message that names the problem and what to do. The command line catches this one class, prints
the message in one line and exits with status 2; anything else is a fault of ssljax's and keeps
its traceback. The Python API raises the same exceptions.

It is a ValueError, so code that caught the ValueError these mistakes used to raise still does.
This module is on the ground floor and imports nothing, so every room may raise it.
"""


class UserError(ValueError):
  """A mistake in what the user gave; the message says what is wrong and what to do."""
