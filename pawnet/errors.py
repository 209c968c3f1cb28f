class UserError(Exception):
    """A mistake the user can fix (a missing folder, one class only, not a model directory).

    The command line prints its message as one line on stderr and exits with status 2.
    """
