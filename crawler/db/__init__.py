"""Database layer: models, engine set-up, migrations and the paper identity store."""
