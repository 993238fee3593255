"""promptdrop: drop a file of prompts into S3, get every answer back exactly once."""
