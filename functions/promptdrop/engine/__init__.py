"""The dispatch engine: bounded, rate-limited, retrying chat-completions calls.

It knows nothing of S3, DynamoDB or Lambda: it takes requests and a sender, and hands back
outcomes.
"""
