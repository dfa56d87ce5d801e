"""The subcommands of ``nnunet-ext``, one module each, named as the subcommand.

Every module here has the same three parts, and ``nnunet_ext.cli`` wires them all the same way (the
order of ``nnunet_ext.cli.SUBCOMMANDS`` is that of ``nnunet-ext --help``):

- ``SUBCOMMAND``: a :class:`nnunet_ext.cli.Subcommand`, what ``nnunet-ext NAME --help`` opens with;
- ``configure_parser(parser)``: its arguments, on the argparse sub-parser;
- ``command(args)``: what it does. Errors that name the problem and the fix are raised as ``ValueError``,
  ``RuntimeError``, ``FileNotFoundError`` or ``FileExistsError`` (printed without a traceback, exit status 2).

Building the parser imports neither SimpleITK nor torch: ``command`` imports what it needs when it runs.
"""
