"""The SageMaker backend (`backend.SageMakerBackend`). Nothing is imported here: boto3 and botocore stay lazy."""
