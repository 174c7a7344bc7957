"""`python -m services.bookings`: run the bookings service (configured by the environment)."""

from backbone.runtime import serve
from services.bookings.bootstrap import bootstrap

if __name__ == "__main__":
    serve(bootstrap)
