"""The subcommands of ``nnunet-ext``, one module each, named as the subcommand.

Every module here has the same parts, and ``nnunet_ext.cli`` wires them all the same way (the order of
``nnunet_ext.cli.SUBCOMMANDS`` is that of ``nnunet-ext --help``):

- its docstring: a one-line summary (also shown by ``nnunet-ext --help``), then what the command does and what it
  writes; ``nnunet-ext NAME --help`` opens with it;
- ``EXIT_STATUSES``, where the command can end with more than 0 and 2 (keys of ``nnunet_ext.cli.EXIT_STATUS``);
- ``configure_parser(parser)``: its arguments, on the argparse sub-parser;
- ``command(args)``: what it does. Errors that name the problem and the fix are raised as ``ValueError``,
  ``RuntimeError``, ``FileNotFoundError`` or ``FileExistsError`` (printed without a traceback, exit status 2).

Building the parser imports neither SimpleITK nor torch: ``command`` imports what it needs when it runs.
"""
