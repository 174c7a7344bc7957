"""`python -m services.portal`: run the portal (configured by the environment)."""

import uvicorn

from backbone.logging import configure
from services.portal.bootstrap import bootstrap

if __name__ == "__main__":
    portal = bootstrap()
    settings = portal.state.settings
    configure("portal", settings.log_level, settings.log_format)
    uvicorn.run(
        portal,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        proxy_headers=True,  # X-Forwarded-Proto from FORWARDED_ALLOW_IPS: cookies Secure under TLS
        timeout_graceful_shutdown=10,
    )
