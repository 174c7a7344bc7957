"""The customer portal and the staff back office: server-rendered pages over the other
services' HTTP APIs (see docs/architecture.md, "The portal")."""
