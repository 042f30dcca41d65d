"""What ``make lint`` reviews in each migration: data loss, PostgreSQL locks, acknowledgements."""
