import sys

from golden_fast.cli import main

sys.exit(main())
