"""`python -m trainyard.worker`: what executors start for each trial."""

from trainyard.worker.lifetime import exit_now
from trainyard.worker.main import main

exit_now(main())
