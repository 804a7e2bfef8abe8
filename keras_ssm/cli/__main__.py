"""``python -m keras_ssm.cli``: the same as the ``ssm`` command."""

import sys

from keras_ssm.cli.main import main

sys.exit(main())
