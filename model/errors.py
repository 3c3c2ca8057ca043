"""The one exception type that means "the user's input is wrong", not "gatesum is broken"."""


class GatesumError(Exception):
    """Bad input (a missing file, a corrupt bundle, an unknown column...).

    The command line prints it as one line and exits non-zero; the service answers 4xx.
    The message names the file or field at fault.
    """
