"""The ``ssm`` command line: one short module per subcommand, each parsing its arguments and
calling the library.  Nothing in the library imports this package.

    ssm train --model fcn --out runs/fcn            keras_ssm.train
    ssm eval runs/fcn                               keras_ssm.run_dir + Model.evaluate
    ssm summary runs/fcn                            keras_ssm.summary
    ssm export runs/fcn --shrink --int8             keras_ssm.export.export_run
    ssm bench runs/fcn                              keras_ssm.export.bench_run
    ssm report runs/fcn                             keras_ssm.report.make_report

>>> from keras_ssm.cli import build_parser
>>> args = build_parser().parse_args(["train", "--model", "fcn", "--out", "runs/fcn"])
>>> args.command, args.model, args.mask, args.precision
('train', 'fcn', 'signed', 'auto')
"""

from keras_ssm.cli.args import UsageError
from keras_ssm.cli.main import build_parser, main

__all__ = ["UsageError", "build_parser", "main"]
