"""A base for management commands that take user input: bad input prints one
line to stderr and exits 2, never a usage dump or a traceback."""

from __future__ import annotations

import os
import sys

from django.core.management.base import BaseCommand, CommandError


class InputError(CommandError):
    """Bad input from the command line: one line, exit 2."""

    def __init__(self, message: str):
        super().__init__(message, returncode=2)


class StrictCommand(BaseCommand):
    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        command = f"{os.path.basename(prog_name)} {subcommand}"

        def one_line_error(message: str):
            if parser.called_from_command_line:
                sys.stderr.write(f"{command}: error: {message}\n")
                sys.exit(2)
            raise InputError(message)

        parser.error = one_line_error
        return parser

    def run_from_argv(self, argv):
        self._called_as = f"{argv[0].rsplit('/', 1)[-1]} {argv[1]}"
        try:
            super().run_from_argv(argv)
        except CommandError as exc:  # only reached with --traceback
            raise exc

    def execute(self, *args, **options):
        try:
            return super().execute(*args, **options)
        except CommandError as exc:
            if not getattr(self, "_called_as", None) or options.get("traceback"):
                raise
            sys.stderr.write(f"{self._called_as}: error: {exc}\n")
            sys.exit(exc.returncode)
