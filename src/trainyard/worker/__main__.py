"""`python -m trainyard.worker`: what executors start for each trial."""

import sys

from trainyard.worker.main import main

sys.exit(main())
