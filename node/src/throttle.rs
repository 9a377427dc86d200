//! Upload rate limiting: a token bucket.
// STUB until the policy branch's limiter lands.
pub(crate) struct UploadLimiter;
impl UploadLimiter {
    pub(crate) fn new(_rate: Option<f64>) -> Self {
        Self
    }
    pub(crate) async fn acquire(&self, _bytes: usize) {}
}
