"""`python -m services.accounts`: run the accounts service (configured by the environment)."""

from backbone.runtime import serve
from services.accounts.bootstrap import bootstrap

if __name__ == "__main__":
    serve(bootstrap)
