"""PostgreSQL migrations: the same numbered schema versions as the SQLite files one level up.

A version number means the same tables, columns, constraints, indexes and triggers on both
databases, in each one's dialect, so `lorabot copy-database` can move rows between them.
"""
