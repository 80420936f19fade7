#!/usr/bin/env python3
"""boto3 and raw SigV4 requests against `snapimport serve`, for Tests/APITests/EndToEndTests.swift.

Usage: ec2_client.py ENDPOINT ACCESS_KEY SECRET MODE [ARGS…]; prints one JSON document on stdout.

Modes:
  describe SNAP_ID                 boto3 describe_snapshots(SnapshotIds=[SNAP_ID])
  description SNAP_ID TEXT         boto3 modify_snapshot_attribute with Description.Value added by a
                                   before-call hook (the reference cloud's parameter, absent from
                                   botocore's model), then describe_snapshots
  paginate OWNER PAGE_SIZE         boto3's DescribeSnapshots paginator: the IDs in order, the page count
  raw QUERY [DATE] [SECRET]        a hand-signed POST (own SigV4 implementation, hashlib/hmac) of the
                                   form body QUERY, signed at DATE (YYYYMMDDTHHMMSSZ, default now) with
                                   SECRET (default the key's): prints status, code, message, body
  boto-error OPERATION JSON_ARGS   a boto3 call expected to fail: prints HTTP status, code, message
  start-cancel BUCKET KEY          boto3 import_snapshot, then at once cancel_import_task (no process
                                   start-up between them, so the import is still running)
"""
import datetime
import hashlib
import hmac
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, access_key, secret, mode, *args = sys.argv[1:]
REGION = "croc"


def client():
    return boto3.client(
        "ec2", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=access_key,
        aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1, "mode": "standard"}))


def sign_and_post(body, date=None, key_secret=None):
    """SigV4 by hand (ec2-api.md §3), so that the date and the secret can be anything."""
    key_secret = key_secret or secret
    amz_date = date or datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    url = urllib.parse.urlsplit(endpoint)
    host = url.netloc
    content_type = "application/x-www-form-urlencoded; charset=utf-8"
    payload = body.encode()
    canonical = "\n".join([
        "POST", "/", "",
        f"content-type:{content_type}", f"host:{host}", f"x-amz-date:{amz_date}", "",
        "content-type;host;x-amz-date", hashlib.sha256(payload).hexdigest()])
    scope = f"{day}/{REGION}/ec2/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    k = ("AWS4" + key_secret).encode()
    for part in (day, REGION, "ec2", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    request = urllib.request.Request(endpoint + "/", data=payload, method="POST", headers={
        "Content-Type": content_type, "X-Amz-Date": amz_date,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                         f"SignedHeaders=content-type;host;x-amz-date, Signature={signature}"})
    try:
        with urllib.request.urlopen(request) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    root = ET.fromstring(text)  # every answer must be XML
    strip = lambda tag: tag.split("}")[-1]
    code = next((e.text for e in root.iter() if strip(e.tag) == "Code"), None)
    message = next((e.text for e in root.iter() if strip(e.tag) == "Message"), None)
    return {"status": status, "code": code, "message": message, "body": text}


if mode == "describe":
    snapshots = client().describe_snapshots(SnapshotIds=[args[0]])["Snapshots"]
    print(json.dumps(snapshots, default=str))
elif mode == "description":
    ec2 = client()
    snapshot_id, text = args

    def add_description(params, **_):
        params["body"]["Description.Value"] = text

    ec2.meta.events.register("before-call.ec2.ModifySnapshotAttribute", add_description)
    ec2.modify_snapshot_attribute(SnapshotId=snapshot_id)
    print(json.dumps(ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"], default=str))
elif mode == "paginate":
    owner, page_size = args[0], int(args[1])
    pages = client().get_paginator("describe_snapshots").paginate(
        OwnerIds=[owner], PaginationConfig={"PageSize": page_size})
    ids, count = [], 0
    for page in pages:
        count += 1
        ids += [s["SnapshotId"] for s in page["Snapshots"]]
    print(json.dumps({"ids": ids, "pages": count}))
elif mode == "raw":
    query = args[0]
    date = args[1] if len(args) > 1 and args[1] else None
    other_secret = args[2] if len(args) > 2 else None
    print(json.dumps(sign_and_post(query, date, other_secret)))
elif mode == "boto-error":
    operation, kwargs = args[0], json.loads(args[1])
    try:
        getattr(client(), operation)(**kwargs)
        print(json.dumps({"status": 200, "code": None}))
    except ClientError as error:
        print(json.dumps({
            "status": error.response["ResponseMetadata"]["HTTPStatusCode"],
            "code": error.response["Error"]["Code"], "message": error.response["Error"].get("Message"),
            "requestId": error.response["ResponseMetadata"].get("RequestId")}))
elif mode == "start-cancel":
    ec2 = client()
    started = ec2.import_snapshot(
        Description="to cancel", DiskContainer={"Format": "RAW", "UserBucket": {"S3Bucket": args[0], "S3Key": args[1]}})
    cancelled = ec2.cancel_import_task(ImportTaskId=started["ImportTaskId"], CancelReason="test")
    print(json.dumps({"id": started["ImportTaskId"], "previous": cancelled.get("PreviousState"),
                      "state": cancelled.get("State")}))
else:
    sys.exit(f"unknown mode {mode}")
