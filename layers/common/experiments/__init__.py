"""Shared package of the k6 experiment ingestion service: models, database access and storage."""
