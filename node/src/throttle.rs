//! Upload rate limiting: a token bucket.
