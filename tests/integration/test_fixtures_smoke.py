"""The back-ends the integration suite relies on are real and reachable."""

from __future__ import annotations

import asyncpg
import boto3
import pytest
import redis.asyncio as redis

pytestmark = pytest.mark.integration


async def test_postgres_database_is_fresh(pg: asyncpg.Connection, database_url: str) -> None:
    name = await pg.fetchval("SELECT current_database()")
    assert name.startswith("nango_test_")
    assert name in database_url


async def test_redis_answers(redis_url: str, redis_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        await client.set(redis_prefix + "smoke", "1", ex=10)
        assert await client.get(redis_prefix + "smoke") == b"1"
    finally:
        await client.aclose()


def test_s3_server_stores_objects(s3_endpoint: str, s3_credentials: None) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="smoke-bucket")
    s3.put_object(Bucket="smoke-bucket", Key="a/b", Body=b"hello")
    assert s3.get_object(Bucket="smoke-bucket", Key="a/b")["Body"].read() == b"hello"
