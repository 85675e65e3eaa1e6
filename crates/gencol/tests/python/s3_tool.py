"""What the `s3` exporter's tests (crates/gencol/tests/s3.rs) do at the S3 API server
(moto_server) besides what gencol writes: make the bucket (and, with IAM auth on, a user
whose keys may write it), and read back every object. boto3 is the AWS SDK for Python.

    s3_tool.py ENDPOINT setup BUCKET [--iam]   -> {"access_key_id": ..., "secret_access_key": ...}
    s3_tool.py ENDPOINT dump BUCKET AK SK      -> [{"key", "content_type", "text"}] (text gunzipped)
"""

import gzip
import json
import sys

import boto3


def client(endpoint, service, ak="test", sk="test"):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ak,
        aws_secret_access_key=sk,
    )


def setup(endpoint, bucket, iam):
    ak, sk = "test", "test"
    if iam:
        # moto_server runs with INITIAL_NO_AUTH_ACTION_COUNT=3: these three calls are the
        # only ones it takes without valid keys; everything after is checked.
        i = client(endpoint, "iam")
        i.create_user(UserName="gencol")
        i.put_user_policy(
            UserName="gencol",
            PolicyName="s3",
            PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
            ),
        )
        key = i.create_access_key(UserName="gencol")["AccessKey"]
        ak, sk = key["AccessKeyId"], key["SecretAccessKey"]
    client(endpoint, "s3", ak, sk).create_bucket(Bucket=bucket)
    print(json.dumps({"access_key_id": ak, "secret_access_key": sk}))


def dump(endpoint, bucket, ak, sk):
    s3 = client(endpoint, "s3", ak, sk)
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            got = s3.get_object(Bucket=bucket, Key=obj["Key"])
            out.append(
                {
                    "key": obj["Key"],
                    "content_type": got.get("ContentType"),
                    "text": gzip.decompress(got["Body"].read()).decode("utf-8"),
                }
            )
    print(json.dumps(out))


if __name__ == "__main__":
    endpoint, command, bucket = sys.argv[1], sys.argv[2], sys.argv[3]
    if command == "setup":
        setup(endpoint, bucket, "--iam" in sys.argv[4:])
    elif command == "dump":
        dump(endpoint, bucket, sys.argv[4], sys.argv[5])
    else:
        sys.exit(f"unknown command {command}")
