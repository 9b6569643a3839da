import sys

from bench.drills._cli import main

sys.exit(main())
