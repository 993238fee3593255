"""The AWS edge: S3 objects, the DynamoDB journal, the dead-letter queue. Nothing here knows OpenAI."""
