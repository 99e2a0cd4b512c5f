"""MTurk through boto3: publish a batch as HITs, sync answers back, review, expire, balance.
Sandbox unless `--production` is given and confirmed."""
