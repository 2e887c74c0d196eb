"""``python -m heatvol.cli`` (what torchrun runs): the ``heatvol`` command."""

from . import main

main()
