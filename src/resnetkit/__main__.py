"""``python -m resnetkit`` (also what ``torchrun -m resnetkit train`` runs)."""
import sys

from .cli import main

sys.exit(main())
