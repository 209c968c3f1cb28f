class UserError(Exception):
    """A mistake the user can fix (a missing folder, one class only, not a model directory).

    The command line prints its message as one line on stderr and exits with status 2.
    """


class DownloadError(Exception):
    """A transfer that failed for reasons outside the user's input (the network, the disk).

    The command line prints its message as one line and exits with status 1.
    """


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a job that can be continued; the message says how.

    The command line prints "pawnet: interrupted; MESSAGE" and exits with status 130.
    """
