"""A local S3 endpoint for the object-store tests: moto's server on loopback, with dummy credentials.

The endpoint reaches boto3, s3fs and every process started with `S3Endpoint.env` through botocore's
``AWS_ENDPOINT_URL``, as a cluster's nodes would find a MinIO or another S3-compatible store.
"""

from __future__ import annotations

from dataclasses import dataclass

BUCKET = "advparams-test"


@dataclass(frozen=True)
class S3Endpoint:
    url: str

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to reach the endpoint (dummy credentials: moto checks none)."""
        return {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1"}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id="testing",
                            aws_secret_access_key="testing", region_name="us-east-1")

    def objects(self, prefix: str) -> list[str]:
        """The keys of the objects under ``prefix`` in `BUCKET`."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))
