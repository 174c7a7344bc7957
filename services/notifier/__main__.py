"""`python -m services.notifier`: run the notifier service (configured by the environment)."""

from backbone.runtime import serve
from services.notifier.bootstrap import bootstrap

if __name__ == "__main__":
    serve(bootstrap)
