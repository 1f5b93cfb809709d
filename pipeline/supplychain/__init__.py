"""Supply-chain checks: scan reports and their policy, Dockerfile policy, signing, the promotion guard."""
