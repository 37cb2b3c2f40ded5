"""Input channels beyond a folder copied up front: the SageMaker fields each channel option maps to, S3 channels
on the local backend (a download cache keyed by ETag, ShardedByS3Key shares, FastFile's lazy FUSE mount), and
what each instance copies before its script starts.

Imports nothing heavy at module level: boto3 and the FUSE binding load where they are used.
"""
