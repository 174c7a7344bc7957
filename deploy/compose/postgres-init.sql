-- One database per service (each service's events, read models and subject keys), shared by
-- all replicas of that service. Run once, when the postgres volume is created.
CREATE DATABASE accounts;
CREATE DATABASE bookings;
CREATE DATABASE notifier;
