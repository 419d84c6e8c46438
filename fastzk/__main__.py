import sys

from fastzk.cli import main

sys.exit(main())
